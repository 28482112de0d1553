//! AMF0, the value encoding of RTMP commands and metadata.

use bytes::{Buf, BufMut, BytesMut};

use super::RtmpError;

const MAX_DEPTH: usize = 16;

/// One AMF0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Amf0 {
    /// 0x00
    Number(f64),
    /// 0x01
    Boolean(bool),
    /// 0x02 and 0x0c (long string)
    String(String),
    /// 0x03: ordered properties.
    Object(Vec<(String, Amf0)>),
    /// 0x05
    Null,
    /// 0x06
    Undefined,
    /// 0x08: an associative array, kept as ordered properties.
    EcmaArray(Vec<(String, Amf0)>),
    /// 0x0a
    StrictArray(Vec<Amf0>),
    /// 0x0b: milliseconds since the epoch (time zone dropped).
    Date(f64),
}

impl Amf0 {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Looks up a property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0> {
        match self {
            Amf0::Object(p) | Amf0::EcmaArray(p) => p.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Shorthand for an object from `(&str, value)` pairs.
    pub fn object<const N: usize>(props: [(&str, Amf0); N]) -> Amf0 {
        Amf0::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Shorthand for a string value.
    pub fn str(s: &str) -> Amf0 {
        Amf0::String(s.to_owned())
    }
}

/// Decodes every value in `data`.
pub fn decode_all(mut data: &[u8]) -> Result<Vec<Amf0>, RtmpError> {
    let mut out = Vec::new();
    while data.has_remaining() {
        out.push(decode(&mut data, 0)?);
    }
    Ok(out)
}

fn need(data: &[u8], n: usize) -> Result<(), RtmpError> {
    if data.len() < n {
        Err(RtmpError::Amf("value truncated"))
    } else {
        Ok(())
    }
}

fn read_str(data: &mut &[u8], len: usize) -> Result<String, RtmpError> {
    need(data, len)?;
    let s = String::from_utf8_lossy(&data[..len]).into_owned();
    data.advance(len);
    Ok(s)
}

fn read_props(data: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf0)>, RtmpError> {
    let mut props = Vec::new();
    loop {
        need(data, 2)?;
        let len = usize::from(data.get_u16());
        if len == 0 {
            need(data, 1)?;
            if data[0] == 0x09 {
                data.advance(1);
                return Ok(props);
            }
        }
        let key = read_str(data, len)?;
        let value = decode(data, depth + 1)?;
        props.push((key, value));
    }
}

fn decode(data: &mut &[u8], depth: usize) -> Result<Amf0, RtmpError> {
    if depth > MAX_DEPTH {
        return Err(RtmpError::Amf("nesting too deep"));
    }
    need(data, 1)?;
    let marker = data.get_u8();
    Ok(match marker {
        0x00 => {
            need(data, 8)?;
            Amf0::Number(data.get_f64())
        }
        0x01 => {
            need(data, 1)?;
            Amf0::Boolean(data.get_u8() != 0)
        }
        0x02 => {
            need(data, 2)?;
            let len = usize::from(data.get_u16());
            Amf0::String(read_str(data, len)?)
        }
        0x0c => {
            need(data, 4)?;
            let len = data.get_u32() as usize;
            Amf0::String(read_str(data, len)?)
        }
        0x03 => Amf0::Object(read_props(data, depth)?),
        0x05 => Amf0::Null,
        0x06 => Amf0::Undefined,
        0x08 => {
            need(data, 4)?;
            data.advance(4); // the count is advisory; the end marker is authoritative
            Amf0::EcmaArray(read_props(data, depth)?)
        }
        0x0a => {
            need(data, 4)?;
            let n = data.get_u32() as usize;
            // Each element takes at least one byte: bound the allocation by the input.
            let mut items = Vec::with_capacity(n.min(data.len()));
            for _ in 0..n {
                items.push(decode(data, depth + 1)?);
            }
            Amf0::StrictArray(items)
        }
        0x0b => {
            need(data, 10)?;
            let ms = data.get_f64();
            data.advance(2);
            Amf0::Date(ms)
        }
        other => return Err(RtmpError::AmfMarker(other)),
    })
}

/// Appends the encoding of `value`.
pub fn encode(value: &Amf0, out: &mut BytesMut) {
    match value {
        Amf0::Number(n) => {
            out.put_u8(0x00);
            out.put_f64(*n);
        }
        Amf0::Boolean(b) => {
            out.put_u8(0x01);
            out.put_u8(u8::from(*b));
        }
        Amf0::String(s) if s.len() <= usize::from(u16::MAX) => {
            out.put_u8(0x02);
            out.put_u16(s.len() as u16);
            out.put_slice(s.as_bytes());
        }
        Amf0::String(s) => {
            out.put_u8(0x0c);
            out.put_u32(s.len() as u32);
            out.put_slice(s.as_bytes());
        }
        Amf0::Object(props) => {
            out.put_u8(0x03);
            encode_props(props, out);
        }
        Amf0::Null => out.put_u8(0x05),
        Amf0::Undefined => out.put_u8(0x06),
        Amf0::EcmaArray(props) => {
            out.put_u8(0x08);
            out.put_u32(props.len() as u32);
            encode_props(props, out);
        }
        Amf0::StrictArray(items) => {
            out.put_u8(0x0a);
            out.put_u32(items.len() as u32);
            for i in items {
                encode(i, out);
            }
        }
        Amf0::Date(ms) => {
            out.put_u8(0x0b);
            out.put_f64(*ms);
            out.put_i16(0);
        }
    }
}

fn encode_props(props: &[(String, Amf0)], out: &mut BytesMut) {
    for (k, v) in props {
        let k = &k.as_bytes()[..k.len().min(usize::from(u16::MAX))];
        out.put_u16(k.len() as u16);
        out.put_slice(k);
        encode(v, out);
    }
    out.put_slice(&[0, 0, 0x09]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            Amf0::str("connect"),
            Amf0::Number(1.0),
            Amf0::object([
                ("app", Amf0::str("live")),
                ("nested", Amf0::EcmaArray(vec![("x".into(), Amf0::Boolean(true))])),
                ("list", Amf0::StrictArray(vec![Amf0::Null, Amf0::Undefined, Amf0::Date(5.0)])),
            ]),
            Amf0::String("y".repeat(70_000)),
        ];
        let mut out = BytesMut::new();
        for v in &values {
            encode(v, &mut out);
        }
        assert_eq!(decode_all(&out).unwrap(), values);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // A string claiming more bytes than there are (the shape of the input
        // that panics rml_rtmp).
        assert!(decode_all(&[0x02, 0x00, 0x10, b'a']).is_err());
        assert!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_all(&[0x03; 64]).is_err());
        assert!(matches!(decode_all(&[0x42]), Err(RtmpError::AmfMarker(0x42))));
    }
}
