//! Kubernetes' protobuf encoding of request bodies, decoded into the JSON
//! form the rest of the API works with.
//!
//! kubectl's typed commands (`create namespace`, `create deployment`,
//! `create configmap`, `expose`, `run`, ...) send their object as
//! `application/vnd.kubernetes.protobuf`: the bytes `k8s\0`, then a
//! `runtime.Unknown` holding the type (apiVersion, kind) and the object's
//! own encoding. Field numbers and types come from [`messages`], which
//! covers the kinds those commands create. A field this server does not
//! know is refused with a message that names it (the caller can send the
//! object as JSON), never dropped.

mod messages;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Go's zero time (0001-01-01T00:00:00Z), which encodes an unset Time.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// How a field is encoded.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str,
    I32,
    I64,
    Bool,
    Bytes,
    Msg(&'static str),
    Rep(&'static Ty),
    MapStr,
    MapBytes,
    MapMsg(&'static str),
    Time,
    IntOrString,
    Quantity,
    RawExtension,
    /// A Go struct embedded in its parent: its fields are the parent's in JSON.
    Inline(&'static str),
}

pub struct Field {
    pub number: u32,
    pub name: &'static str,
    pub ty: Ty,
}

pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

fn message(name: &str) -> Option<&'static Message> {
    messages::ALL.iter().find(|m| m.name == name)
}

/// Decode a protobuf request body to the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf prefix")?;
    let mut reader = Reader(rest);
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &[][..], "");
    while let Some((number, wire)) = reader.key()? {
        match (number, wire) {
            (1, Wire::Len(type_meta)) => {
                let mut tm = Reader(type_meta);
                while let Some((n, w)) = tm.key()? {
                    match (n, w) {
                        (1, Wire::Len(v)) => api_version = utf8(v)?.to_string(),
                        (2, Wire::Len(v)) => kind = utf8(v)?.to_string(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(v)) => raw = v,
            (3, Wire::Len(v)) => encoding = utf8(v)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(format!("content encoding {encoding:?} is not supported"));
    }
    if kind.is_empty() {
        return Err("the protobuf envelope names no kind".into());
    }
    // A kind whose fields differ between versions is listed by version too.
    let versioned = format!("{api_version}/{kind}");
    let name = if message(&versioned).is_some() {
        versioned.as_str()
    } else {
        kind.as_str()
    };
    let mut object = decode_message(name, raw)?;
    if let Value::Object(o) = &mut object {
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

enum Wire<'a> {
    Varint(u64),
    /// No field this server decodes is a 64-bit fixed value either.
    Fixed64,
    Len(&'a [u8]),
    /// No field this server decodes is a 32-bit fixed value.
    Fixed32,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next field's number and value, or None at the end.
    fn key(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((number, wire)))
    }
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "a string field is not UTF-8".to_string())
}

fn b64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

/// Whether `bytes` hold only zero values: Go writes every non-pointer
/// field, so an untouched struct (an object's `status` on create) arrives
/// as a tree of empty fields.
fn all_zero(bytes: &[u8], depth: usize) -> bool {
    let mut r = Reader(bytes);
    loop {
        match r.key() {
            Ok(None) => return true,
            Ok(Some((_, Wire::Varint(0)))) => {}
            Ok(Some((_, Wire::Len([])))) => {}
            Ok(Some((_, Wire::Len(b)))) if depth < 8 && all_zero(b, depth + 1) => {}
            _ => return false,
        }
    }
}

fn decode_message(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let Some(m) = message(name) else {
        if all_zero(bytes, 0) {
            return Ok(Value::Object(Map::new()));
        }
        return Err(format!(
            "{name} objects are not accepted as protobuf; send the object as JSON"
        ));
    };
    let mut out = Map::new();
    let mut reader = Reader(bytes);
    while let Some((number, wire)) = reader.key()? {
        let field = m.fields.iter().find(|f| f.number == number).ok_or_else(|| {
            format!("field {number} of {name} is not understood by this server; send the object as JSON")
        })?;
        let at = |e: String| format!("{name}.{}: {e}", field.name);
        match field.ty {
            Ty::Rep(elem) => {
                let list = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = list {
                    items.extend(repeated(elem, wire).map_err(at)?);
                }
            }
            Ty::Inline(sub) => {
                let Wire::Len(b) = wire else {
                    return Err(at("an embedded message must be length-delimited".into()));
                };
                if let Value::Object(fields) = decode_message(sub, b)? {
                    out.extend(fields);
                }
            }
            Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => {
                let (k, v) = map_entry(field.ty, wire).map_err(at)?;
                if let Value::Object(map) = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    map.insert(k, v);
                }
            }
            ty => {
                if let Some(v) = single(ty, wire).map_err(at)? {
                    out.insert(field.name.to_string(), v);
                } else {
                    out.remove(field.name);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

fn repeated(elem: &Ty, wire: Wire<'_>) -> Result<Vec<Value>, String> {
    // Numbers may come packed: several values in one length-delimited field.
    if let (Ty::I32 | Ty::I64 | Ty::Bool, Wire::Len(bytes)) = (elem, &wire) {
        let mut r = Reader(bytes);
        let mut out = Vec::new();
        while !r.0.is_empty() {
            let v = r.varint()?;
            out.push(scalar_varint(*elem, v));
        }
        return Ok(out);
    }
    // An empty string in a list is a value, not an absent field.
    if let (Ty::Str, Wire::Len(b)) = (elem, &wire) {
        return Ok(vec![json!(utf8(b)?)]);
    }
    Ok(single(*elem, wire)?.into_iter().collect())
}

fn scalar_varint(ty: Ty, v: u64) -> Value {
    match ty {
        Ty::Bool => json!(v != 0),
        Ty::I32 => json!(v as i64 as i32),
        _ => json!(v as i64),
    }
}

fn map_entry(ty: Ty, wire: Wire<'_>) -> Result<(String, Value), String> {
    let Wire::Len(bytes) = wire else {
        return Err("a map entry must be length-delimited".into());
    };
    let mut r = Reader(bytes);
    let (mut key, mut value) = (String::new(), None);
    while let Some((n, w)) = r.key()? {
        match (n, w) {
            (1, Wire::Len(k)) => key = utf8(k)?.to_string(),
            (2, Wire::Len(v)) => {
                value = Some(match ty {
                    Ty::MapStr => json!(utf8(v)?),
                    Ty::MapBytes => b64(v),
                    Ty::MapMsg("Quantity") => quantity(v)?,
                    Ty::MapMsg(name) => decode_message(name, v)?,
                    _ => unreachable!("map types only"),
                })
            }
            _ => return Err("unexpected field in a map entry".into()),
        }
    }
    let empty = match ty {
        Ty::MapStr => json!(""),
        Ty::MapBytes => json!(""),
        _ => json!({}),
    };
    Ok((key, value.unwrap_or(empty)))
}

/// One value; None when it encodes "unset" (an empty string, a zero time),
/// which JSON leaves out.
fn single(ty: Ty, wire: Wire<'_>) -> Result<Option<Value>, String> {
    let v = match (ty, wire) {
        (Ty::Str, Wire::Len(b)) => {
            let s = utf8(b)?;
            (!s.is_empty()).then(|| json!(s))
        }
        (Ty::I32 | Ty::I64 | Ty::Bool, Wire::Varint(v)) => Some(scalar_varint(ty, v)),
        (Ty::Bytes, Wire::Len(b)) => Some(b64(b)),
        (Ty::Msg(name), Wire::Len(b)) => Some(decode_message(name, b)?),
        (Ty::Time, Wire::Len(b)) => time(b)?,
        (Ty::IntOrString, Wire::Len(b)) => Some(int_or_string(b)?),
        (Ty::Quantity, Wire::Len(b)) => Some(quantity(b)?),
        (Ty::RawExtension, Wire::Len(b)) => raw_extension(b)?,
        _ => return Err("wire type does not match the field's type".into()),
    };
    Ok(v)
}

/// Fields of a small message as (number, value) pairs of varints or bytes.
fn small_fields(b: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut r = Reader(b);
    let mut out = Vec::new();
    while let Some(f) = r.key()? {
        out.push(f);
    }
    Ok(out)
}

fn time(b: &[u8]) -> Result<Option<Value>, String> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for (n, w) in small_fields(b)? {
        match (n, w) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = v as i64 as i32 as i64,
            _ => return Err("unexpected field in a Time".into()),
        }
    }
    if seconds == ZERO_TIME_SECONDS && nanos == 0 {
        return Ok(None);
    }
    let t: DateTime<Utc> =
        DateTime::from_timestamp(seconds, nanos as u32).ok_or("time out of range")?;
    Ok(Some(json!(t.to_rfc3339_opts(SecondsFormat::Secs, true))))
}

fn int_or_string(b: &[u8]) -> Result<Value, String> {
    let (mut is_string, mut int, mut text) = (false, 0i64, String::new());
    for (n, w) in small_fields(b)? {
        match (n, w) {
            (1, Wire::Varint(v)) => is_string = v == 1,
            (2, Wire::Varint(v)) => int = v as i64 as i32 as i64,
            (3, Wire::Len(s)) => text = utf8(s)?.to_string(),
            _ => return Err("unexpected field in an IntOrString".into()),
        }
    }
    Ok(if is_string { json!(text) } else { json!(int) })
}

fn quantity(b: &[u8]) -> Result<Value, String> {
    for (n, w) in small_fields(b)? {
        if let (1, Wire::Len(s)) = (n, w) {
            return Ok(json!(utf8(s)?));
        }
    }
    Ok(json!("0"))
}

fn raw_extension(b: &[u8]) -> Result<Option<Value>, String> {
    for (n, w) in small_fields(b)? {
        if let (1, Wire::Len(raw)) = (n, w) {
            if raw.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(raw)
                .map(Some)
                .map_err(|e| format!("an embedded object is not JSON: {e}"));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
