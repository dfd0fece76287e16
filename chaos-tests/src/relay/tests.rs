//! Tests of the TCP relay against a local echo server.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::Relay;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An echo server on a free port; its threads end when their sockets close.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

fn relay_to_echo() -> Relay {
    Relay::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap()
}

fn connect(relay: &Relay) -> TcpStream {
    let stream = TcpStream::connect(relay.local_addr()).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).unwrap();
    got
}

/// Reads until EOF or a reset; panics if the connection stays open past the timeout.
fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the relay to close the connection, got {other:?}"),
    }
}

#[test]
fn relays_bytes_both_ways() {
    let relay = relay_to_echo();
    let mut stream = connect(&relay);
    assert_eq!(round_trip(&mut stream, b"hello"), b"hello");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = big.clone();
    let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut got = vec![0; big.len()];
    stream.read_exact(&mut got).unwrap();
    sender.join().unwrap();
    assert!(got == big, "bytes were altered in transit");
    assert_eq!(relay.control().active_connections(), 1);
}

#[test]
fn delay_applies_in_each_direction() {
    let relay = relay_to_echo();
    let mut stream = connect(&relay);
    round_trip(&mut stream, b"warm");
    relay.control().delay(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow"), b"slow");
    let rtt = started.elapsed();
    assert!(
        rtt >= Duration::from_millis(300),
        "round trip took only {rtt:?}"
    );
    assert!(rtt < TIMEOUT);
}

#[test]
fn partition_stalls_existing_refuses_new_and_heals() {
    let relay = relay_to_echo();
    let control = relay.control();
    let mut stream = connect(&relay);
    round_trip(&mut stream, b"before");

    control.partition(true);
    assert!(control.is_partitioned());
    stream.write_all(b"during").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0; 6];
    let err = stream.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_closed(&mut connect(&relay));

    control.partition(false);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(
        &buf, b"during",
        "data sent during the partition arrives after it heals"
    );
    assert_eq!(round_trip(&mut connect(&relay), b"new"), b"new");
}

#[test]
fn sever_closes_existing_connections_only() {
    let relay = relay_to_echo();
    let mut old = connect(&relay);
    round_trip(&mut old, b"x");
    relay.control().sever();
    assert_closed(&mut old);
    assert_eq!(round_trip(&mut connect(&relay), b"y"), b"y");
}

#[test]
fn dropping_the_relay_closes_listener_and_connections() {
    let relay = relay_to_echo();
    let addr = relay.local_addr();
    let mut stream = connect(&relay);
    round_trip(&mut stream, b"z");
    drop(relay);
    assert_closed(&mut stream);
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn unreachable_target_closes_the_client() {
    // A port that was free a moment ago has no listener.
    let target = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = Relay::start("127.0.0.1:0".parse().unwrap(), target).unwrap();
    assert_closed(&mut connect(&relay));
}
