//! Why params did not fit a type, as data: serde's `de::Error`
//! constructors build it, so no message text is ever parsed.

use std::fmt;

use serde::de;

/// Why params did not fit a type, as its `Deserialize` impl reports it
/// through serde's `de::Error` constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// A required field is absent.
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field the type does not have (`deny_unknown_fields`).
    Unknown {
        /// The field.
        field: String,
    },
    /// A value of the wrong kind (a string for a number).
    WrongType {
        /// What the type takes, in serde's words (`u32`, `a sequence`).
        expected: String,
    },
    /// A value of the right kind but out of range or not allowed.
    WrongValue {
        /// What the type takes, in serde's words.
        expected: String,
    },
    /// An array or tuple of the wrong length.
    WrongLength {
        /// What the type takes.
        expected: String,
    },
    /// Anything else, in the words of the impl that refused.
    Other(String),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Missing { field } => write!(f, "missing field {field}"),
            ParamError::Unknown { field } => write!(f, "unknown field {field}"),
            ParamError::WrongType { expected } => write!(f, "wrong type, expected {expected}"),
            ParamError::WrongValue { expected } => write!(f, "wrong value, expected {expected}"),
            ParamError::WrongLength { expected } => write!(f, "wrong length, expected {expected}"),
            ParamError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamError::Other(msg.to_string())
    }

    fn invalid_type(_unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        ParamError::WrongType {
            expected: exp.to_string(),
        }
    }

    fn invalid_value(_unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        ParamError::WrongValue {
            expected: exp.to_string(),
        }
    }

    fn invalid_length(_len: usize, exp: &dyn de::Expected) -> Self {
        ParamError::WrongLength {
            expected: exp.to_string(),
        }
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        let names: Vec<String> = expected.iter().map(|v| format!("`{v}`")).collect();
        ParamError::WrongValue {
            expected: format!("one of {}", names.join(", ")),
        }
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        ParamError::Unknown {
            field: field.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        ParamError::Missing { field }
    }
}
