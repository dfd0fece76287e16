//! Lenient decoding of an untyped JSON value into a typed struct, reporting every wrong type,
//! unknown field and missing field with its path, where `serde_json::from_value` stops at the
//! first.
//!
//! It is a serde `Deserializer` over `&serde_json::Value`. On a mismatch it records a problem
//! and hands the visitor a placeholder of the shape the visitor asked for (0, "", [], the first
//! enum variant), so decoding carries on. A missing required field cannot be papered over within
//! one pass, because the derived visitor fails only after it has seen every key: decoding then
//! runs again with a placeholder at each missing path, at most [`MAX_PASSES`] times.
//!
//! Placeholders never escape as valid values: [`Decoded::poisoned`] lists their paths so value
//! checks on them can be dropped, and any problem makes the document invalid. It does not judge
//! values; that is the per-kind checks' job.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeOwned};
use serde_json::Value;

use super::field_key;

mod value;

use value::De;

/// Bound on decoding passes: one per missing required field, plus one.
const MAX_PASSES: usize = 64;

/// The result of [`decode`]: a value unless decoding failed outright, plus every problem.
#[derive(Debug)]
pub(super) struct Decoded<T> {
    /// `Some` unless a visitor refused even a placeholder. It may hold placeholders: it is only
    /// valid when `problems` is empty.
    pub(super) value: Option<T>,
    /// (field, message) pairs, in the order found.
    pub(super) problems: Vec<(String, String)>,
    /// Paths where a placeholder stands in for what the user wrote (or left out).
    pub(super) poisoned: Vec<String>,
}

/// Decode `value`, whose path is `root` (`""` for a whole document, `"spec"` for a spec).
pub(super) fn decode<T: DeserializeOwned>(value: &Value, root: &str) -> Decoded<T> {
    let mut fill = BTreeSet::new();
    let mut missing = Vec::new();
    for _ in 0..MAX_PASSES {
        let ctx = Ctx {
            fill: &fill,
            found: RefCell::default(),
        };
        let result = T::deserialize(De {
            value: Some(value),
            path: root.to_owned(),
            ctx: &ctx,
        });
        let Found {
            mut problems,
            mut poisoned,
        } = ctx.found.into_inner();
        let error = match result {
            Ok(v) => {
                poisoned.extend(fill.iter().cloned());
                problems.extend(missing);
                return Decoded {
                    value: Some(v),
                    problems,
                    poisoned,
                };
            }
            Err(e) => e,
        };
        match error {
            Error::Missing {
                field,
                at: Some(at),
                silent,
            } if !fill.contains(&at) => {
                if !silent {
                    missing.push((
                        at.clone(),
                        format!("missing required field {field:?}; add it"),
                    ));
                }
                fill.insert(at);
            }
            other => {
                let (at, message) = other.into_parts(root);
                problems.push((at, message));
                problems.extend(missing);
                return Decoded {
                    value: None,
                    problems,
                    poisoned,
                };
            }
        }
    }
    let message = "too many missing fields; fix the ones reported and try again".to_owned();
    missing.push((root.to_owned(), message));
    Decoded {
        value: None,
        problems: missing,
        poisoned: fill.into_iter().collect(),
    }
}

/// Shared state of one decoding pass.
struct Ctx<'a> {
    /// Paths of missing required fields to fill with placeholders in this pass.
    fill: &'a BTreeSet<String>,
    found: RefCell<Found>,
}

#[derive(Default)]
struct Found {
    problems: Vec<(String, String)>,
    poisoned: Vec<String>,
}

/// Why a pass stopped. Only visitors produce these; mismatches we detect ourselves are recorded
/// in [`Found`] and do not stop the pass.
#[derive(Debug)]
enum Error {
    /// A required field is absent. `at` is set by the struct that noticed; `silent` when that
    /// struct is itself a placeholder, whose emptiness was already reported.
    Missing {
        field: &'static str,
        at: Option<String>,
        silent: bool,
    },
    /// Anything else a visitor refused.
    Other { message: String, at: Option<String> },
}

impl Error {
    /// Attach the path of the value being decoded, unless a deeper value already did.
    fn locate(self, path: &str, placeholder: bool) -> Self {
        match self {
            Error::Missing {
                field, at: None, ..
            } => Error::Missing {
                field,
                at: Some(field_key(path, field)),
                silent: placeholder,
            },
            Error::Other { message, at: None } => Error::Other {
                message,
                at: Some(path.into()),
            },
            located => located,
        }
    }

    fn into_parts(self, root: &str) -> (String, String) {
        match self {
            Error::Missing { field, at, .. } => (
                at.unwrap_or_else(|| root.to_owned()),
                format!("missing required field {field:?}; add it"),
            ),
            Error::Other { message, at } => (at.unwrap_or_else(|| root.to_owned()), message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing { field, .. } => write!(f, "missing required field {field:?}"),
            Error::Other { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Other {
            message: msg.to_string(),
            at: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error::Missing {
            field,
            at: None,
            silent: false,
        }
    }
}
