//! A reader of `multipart/mixed` bodies (RFC 2046 §5.1) as a go-livepeer
//! gateway writes them (Go's `mime/multipart`): `--boundary CRLF`, header
//! lines, an empty line, the body, `CRLF --boundary`, and `--` after the
//! last. Parts are slices of the body (no copy). Bounded: at most
//! [`MAX_PARTS`] parts and [`MAX_HEADER_BYTES`] of headers per part; a
//! truncated body is an error, never a short part.

use bytes::Bytes;

/// Parts one answer may have (one per rendition; a ladder has at most 8).
pub const MAX_PARTS: usize = 32;
/// Header bytes one part may have.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// One part: its headers (names as sent) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Header lines, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Part {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a body is not a multipart answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The content type is not `multipart/...` with a usable boundary.
    #[error("not a multipart content type with a boundary: {0:?}")]
    NoBoundary(String),
    /// No opening delimiter.
    #[error("the body does not start a part")]
    NoFirstPart,
    /// The body ends inside a part or before the closing delimiter.
    #[error("the body is truncated")]
    Truncated,
    /// A header line without a colon, or not UTF-8.
    #[error("malformed part header")]
    BadHeader,
    /// A part's headers are longer than [`MAX_HEADER_BYTES`].
    #[error("part headers too long")]
    HeadersTooLong,
    /// More than [`MAX_PARTS`] parts.
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
}

/// The boundary of a `multipart/*` content type (quoted or not).
pub fn boundary(content_type: &str) -> Result<&str, MultipartError> {
    let no = || MultipartError::NoBoundary(content_type.chars().take(120).collect());
    let mut fields = content_type.split(';');
    let kind = fields.next().unwrap_or("").trim();
    if !kind.to_ascii_lowercase().starts_with("multipart/") {
        return Err(no());
    }
    let value = fields
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim())
        .ok_or_else(no)?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    // RFC 2046: 1 to 70 characters.
    if value.is_empty() || value.len() > 70 || value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(no());
    }
    Ok(value)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        let next = hay[at..=hay.len() - needle.len()].iter().position(|&b| b == first)?;
        at += next;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Splits `body` into its parts, given the content type's `boundary`.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let dash = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    // The first delimiter may open the body or follow a preamble line.
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        find(body, delim.as_bytes()).ok_or(MultipartError::NoFirstPart)? + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts); // the closing delimiter
        }
        // Transport padding, then the line break that ends the delimiter line.
        let line_end = find(rest, b"\r\n").ok_or(MultipartError::Truncated)?;
        if rest[..line_end].iter().any(|&b| b != b' ' && b != b'\t') {
            return Err(MultipartError::Truncated);
        }
        let start = at + line_end + 2;
        let rest = &body[start..];
        let (headers, body_start) = if rest.starts_with(b"\r\n") {
            (Vec::new(), start + 2)
        } else {
            let end = find(&rest[..rest.len().min(MAX_HEADER_BYTES + 4)], b"\r\n\r\n").ok_or(
                if rest.len() > MAX_HEADER_BYTES { MultipartError::HeadersTooLong } else { MultipartError::Truncated },
            )?;
            (headers_of(&rest[..end])?, start + end + 4)
        };
        let len = find(&body[body_start..], delim.as_bytes()).ok_or(MultipartError::Truncated)?;
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        parts.push(Part { headers, body: body.slice(body_start..body_start + len) });
        at = body_start + len + delim.len();
    }
}

fn headers_of(block: &[u8]) -> Result<Vec<(String, String)>, MultipartError> {
    let text = std::str::from_utf8(block).map_err(|_| MultipartError::BadHeader)?;
    text.split("\r\n")
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or(MultipartError::BadHeader)?;
            let name = name.trim();
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(MultipartError::BadHeader);
            }
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two parts as Go's `mime/multipart` writes them for a gateway answer.
    fn answer() -> Bytes {
        let mut b = Vec::new();
        for (name, body) in [("480p", &b"\x47abc"[..]), ("240p", &b"\x47\r\n--not-it\r\nx"[..])] {
            b.extend_from_slice(b"--7f3a\r\n");
            b.extend_from_slice(format!("Content-Type: video/mp2t; name=\"{name}_3.ts\"\r\n").as_bytes());
            b.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            b.extend_from_slice(format!("Content-Disposition: attachment; filename=\"{name}_3.ts\"\r\n").as_bytes());
            b.extend_from_slice(format!("Rendition-Name: {name}\r\n\r\n").as_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--7f3a--\r\n");
        Bytes::from(b)
    }

    #[test]
    fn reads_a_gateway_answer() {
        let b = boundary("multipart/mixed; boundary=7f3a").unwrap();
        let parts = parse(&answer(), b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("rendition-name"), Some("480p"));
        assert_eq!(parts[0].header("Content-Type"), Some("video/mp2t; name=\"480p_3.ts\""));
        assert_eq!(&parts[0].body[..], b"\x47abc");
        assert_eq!(&parts[1].body[..], b"\x47\r\n--not-it\r\nx", "a near-delimiter inside a body stays");
    }

    #[test]
    fn boundaries_quoted_or_not_and_refusals() {
        assert_eq!(boundary("multipart/mixed; boundary=\"a b\"").unwrap(), "a b");
        assert_eq!(boundary("Multipart/Mixed;charset=x; Boundary=q").unwrap(), "q");
        assert!(boundary("video/mp2t").is_err());
        assert!(boundary("multipart/mixed").is_err());
        assert!(boundary(&format!("multipart/mixed; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn truncated_and_bad_bodies_are_errors() {
        let full = answer();
        let b = "7f3a";
        // Cut anywhere before the closing delimiter: never a short part.
        for cut in 0..full.len() - 10 {
            let r = parse(&full.slice(..cut), b);
            assert!(r.is_err(), "cut at {cut}: {r:?}");
        }
        assert_eq!(parse(&Bytes::from_static(b"hello"), b), Err(MultipartError::NoFirstPart));
        let bad = Bytes::from_static(b"--7f3a\r\nno colon here\r\n\r\nx\r\n--7f3a--");
        assert_eq!(parse(&bad, b), Err(MultipartError::BadHeader));
        let mut many = Vec::new();
        for _ in 0..=MAX_PARTS {
            many.extend_from_slice(b"--7f3a\r\n\r\nx\r\n");
        }
        many.extend_from_slice(b"--7f3a--");
        assert_eq!(parse(&Bytes::from(many), b), Err(MultipartError::TooManyParts));
    }

    #[test]
    fn a_preamble_and_an_empty_answer() {
        let body = Bytes::from_static(b"preamble\r\n--q\r\nA: 1\r\n\r\nbody\r\n--q--");
        let parts = parse(&body, "q").unwrap();
        assert_eq!((parts.len(), &parts[0].body[..]), (1, &b"body"[..]));
        assert!(parse(&Bytes::from_static(b"--q--\r\n"), "q").unwrap().is_empty());
    }
}
