//! Write coalescing: concurrent API writes become one Raft entry.
//!
//! openraft 0.9 appends (and fsyncs) once per client write, so 64 concurrent writers would pay
//! 64 fsyncs in a row. The proposer task takes whatever writes are queued when it is free,
//! proposes them as one `Command::Batch`, and answers each from its own response.
//!
//! ```text
//!  handler ─(cmd, reply)─▶ bounded queue ─▶ proposer: drain ≤ MAX_BATCH ─▶ raft.client_write(Batch)
//!  handler ◀──────────────────────────────── reply[i] ◀── CommandResponse::Batch[i]
//! ```
//! A failure of the whole entry (not leader, timeout) is answered to every command in it: none
//! of them was applied (not leader), or each may have been (timeout), exactly as for one write.

use std::time::Duration;

use mesh_proto::command::{Command, CommandResponse};
use mesh_raft_store::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

/// Most commands in one entry. Bounded so one entry stays far below the frame limit.
const MAX_BATCH: usize = 256;
/// Queue depth; a full queue makes handlers wait (backpressure), never grows memory.
const QUEUE: usize = 1024;

/// Why a proposal did not produce a response.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// Certainly not applied: this node is not (or no longer) the leader.
    NotLeader(String),
    /// Not committed in time: may or may not be applied.
    Timeout(Duration),
    /// A membership change conflicted.
    Membership(String),
    /// Raft stopped.
    Fatal(String),
}

type Job = (
    Command,
    oneshot::Sender<Result<CommandResponse, ProposeError>>,
);

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Job>,
}

impl Proposer {
    /// Start the proposer task for `raft`; it ends when every `Proposer` handle is dropped.
    pub fn spawn(raft: Raft, commit_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx, commit_timeout));
        Self { tx }
    }

    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| ProposeError::Fatal("the proposer stopped".into()))?;
        rx.await
            .map_err(|_| ProposeError::Fatal("the proposer dropped the request".into()))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Job>, commit_timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<Command>, Vec<_>) = jobs.into_iter().unzip();
        let single = cmds.len() == 1;
        let entry = if single {
            cmds.into_iter().next().unwrap_or(Command::Batch(vec![]))
        } else {
            Command::Batch(cmds)
        };
        let result = match tokio::time::timeout(commit_timeout, raft.client_write(entry)).await {
            Err(_) => Err(ProposeError::Timeout(commit_timeout)),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(
                ProposeError::NotLeader(format!("leader is {:?}", f.leader_id)),
            ),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ProposeError::Membership(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Fatal(f.to_string())),
        };
        match result {
            Ok(CommandResponse::Batch(responses))
                if !single && responses.len() == replies.len() =>
            {
                for (reply, r) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(r));
                }
            }
            Ok(r) if single => {
                for reply in replies {
                    let _ = reply.send(Ok(r.clone()));
                }
            }
            Ok(other) => {
                let e = ProposeError::Fatal(format!("batch answered with {other:?}"));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
