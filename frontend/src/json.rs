//! Small helpers to walk `serde_json` values with errors that say where in the document the
//! expectation failed (the export schema is read defensively: any shape of JSON gives a typed
//! error, never a panic).

use crate::error::FrontendError;
use serde_json::Value;

/// A position in a JSON document, for error messages.
#[derive(Clone)]
pub struct At<'a> {
    pub entry: &'a str,
    pub path: String,
}

impl<'a> At<'a> {
    pub fn root(entry: &'a str) -> Self {
        At { entry, path: "$".into() }
    }

    pub fn key(&self, k: &str) -> At<'a> {
        At { entry: self.entry, path: format!("{}.{k}", self.path) }
    }

    pub fn index(&self, i: usize) -> At<'a> {
        At { entry: self.entry, path: format!("{}[{i}]", self.path) }
    }

    pub fn err(&self, reason: impl Into<String>) -> FrontendError {
        FrontendError::Schema { entry: self.entry.to_string(), path: self.path.clone(), reason: reason.into() }
    }
}

pub fn field<'v>(v: &'v Value, key: &str, at: &At) -> Result<&'v Value, FrontendError> {
    v.get(key).ok_or_else(|| at.err(format!("missing field `{key}`")))
}

pub fn obj<'v>(v: &'v Value, at: &At) -> Result<&'v serde_json::Map<String, Value>, FrontendError> {
    v.as_object().ok_or_else(|| at.err("expected an object"))
}

pub fn arr<'v>(v: &'v Value, at: &At) -> Result<&'v Vec<Value>, FrontendError> {
    v.as_array().ok_or_else(|| at.err("expected an array"))
}

pub fn str_<'v>(v: &'v Value, at: &At) -> Result<&'v str, FrontendError> {
    v.as_str().ok_or_else(|| at.err("expected a string"))
}

pub fn int(v: &Value, at: &At) -> Result<i64, FrontendError> {
    v.as_i64().ok_or_else(|| at.err("expected an integer"))
}

/// A float, also accepting the strings `Infinity`, `-Infinity` and `NaN` that the exporter
/// writes for non-finite values, and integers.
pub fn float(v: &Value, at: &At) -> Result<f64, FrontendError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| at.err("expected a number")),
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" | "nan" => Ok(f64::NAN),
            _ => Err(at.err(format!("expected a number, got the string `{s}`"))),
        },
        _ => Err(at.err("expected a number")),
    }
}

/// A single-key object `{ "kind": payload }` as the schema encodes unions.
pub fn union<'v>(v: &'v Value, at: &At) -> Result<(&'v str, &'v Value), FrontendError> {
    let o = obj(v, at)?;
    let mut it = o.iter();
    match (it.next(), it.next()) {
        (Some((k, p)), None) => Ok((k.as_str(), p)),
        _ => Err(at.err("expected a union (an object with exactly one field)")),
    }
}
