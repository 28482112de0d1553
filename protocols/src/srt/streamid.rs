//! The SRT `streamid`: which stream, publish or play, and the credential.
//!
//! Two forms are accepted:
//! * the SRT Access Control syntax, `#!::key=value,key=value`, with `r`
//!   (resource: the stream name), `m` (`publish`, `request`; `play` is an
//!   alias; the default is `request`, as the convention says), `u` (user), and
//!   the credential in `t` (token; the convention's type words `stream`,
//!   `file`, `auth` are ignored there) or `s` (session);
//! * a plain `NAME` or `NAME?key=KEY`, which publishes (what ffmpeg and OBS
//!   users type), or `play:NAME` / `read:NAME` to play.

/// Publish or play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The caller sends media.
    Publish,
    /// The caller receives media.
    Request,
}

/// A parsed streamid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamIdRequest {
    /// The stream name (or, in key-as-name use, the key).
    pub name: String,
    /// Publish or play.
    pub mode: Mode,
    /// `u=`.
    pub user: Option<String>,
    /// The credential: `t=`, `s=` or `?key=`.
    pub credential: Option<String>,
}

impl StreamIdRequest {
    /// The form the publish gate reads: `NAME?key=CREDENTIAL`, or `NAME`.
    pub fn gate_key(&self) -> String {
        match &self.credential {
            Some(c) => format!("{}?key={c}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why a streamid was refused (answered with SRT reject code 2400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamIdError {
    /// No stream name.
    #[error("the streamid names no stream")]
    NoName,
    /// `m=` is not publish, request or play.
    #[error("unknown mode {0:?}: use m=publish or m=request")]
    BadMode(String),
    /// A `#!::` item without `=`.
    #[error("malformed streamid item {0:?}")]
    Malformed(String),
    /// Too long to be a streamid (SRT allows 512 bytes).
    #[error("streamid longer than 512 bytes")]
    TooLong,
}

/// Parses a streamid.
pub fn parse(sid: &str) -> Result<StreamIdRequest, StreamIdError> {
    if sid.len() > 512 {
        return Err(StreamIdError::TooLong);
    }
    if let Some(items) = sid.strip_prefix("#!::") {
        let mut req = StreamIdRequest { name: String::new(), mode: Mode::Request, user: None, credential: None };
        for item in items.split(',').filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| StreamIdError::Malformed(item.to_owned()))?;
            match k {
                "r" => req.name = v.to_owned(),
                "m" => {
                    req.mode = match v {
                        "publish" => Mode::Publish,
                        "request" | "play" => Mode::Request,
                        other => return Err(StreamIdError::BadMode(other.to_owned())),
                    }
                }
                "u" => req.user = Some(v.to_owned()),
                "t" if !matches!(v, "stream" | "file" | "auth") => req.credential = Some(v.to_owned()),
                "s" if req.credential.is_none() => req.credential = Some(v.to_owned()),
                _ => {} // h (host) and others: not used
            }
        }
        if let Some((name, query)) = req.name.clone().split_once('?') {
            req.name = name.to_owned();
            if let Some(k) = query.split('&').find_map(|kv| kv.strip_prefix("key=")) {
                req.credential = Some(k.to_owned());
            }
        }
        if req.name.is_empty() {
            return Err(StreamIdError::NoName);
        }
        return Ok(req);
    }
    let (mode, rest) = if let Some(r) = sid.strip_prefix("play:").or_else(|| sid.strip_prefix("read:")) {
        (Mode::Request, r)
    } else {
        (Mode::Publish, sid.strip_prefix("publish:").unwrap_or(sid))
    };
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    if name.is_empty() {
        return Err(StreamIdError::NoName);
    }
    let credential = query.split('&').find_map(|kv| kv.strip_prefix("key=")).map(str::to_owned);
    Ok(StreamIdRequest { name: name.to_owned(), mode, user: None, credential })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_control_syntax() {
        let r = parse("#!::r=cam1,m=publish,u=alice,t=s3cret").unwrap();
        assert_eq!(
            r,
            StreamIdRequest {
                name: "cam1".into(),
                mode: Mode::Publish,
                user: Some("alice".into()),
                credential: Some("s3cret".into())
            }
        );
        assert_eq!(r.gate_key(), "cam1?key=s3cret");
        let r = parse("#!::m=request,r=cam1").unwrap();
        assert_eq!((r.mode, r.credential), (Mode::Request, None));
        assert_eq!(parse("#!::r=cam1").unwrap().mode, Mode::Request, "the convention's default");
        assert_eq!(parse("#!::r=cam1,t=stream,s=abc").unwrap().credential.as_deref(), Some("abc"));
        assert_eq!(parse("#!::r=cam1?key=k1,m=publish").unwrap().credential.as_deref(), Some("k1"));
    }

    #[test]
    fn plain_forms() {
        let r = parse("cam1?key=s3cret").unwrap();
        assert_eq!((r.name.as_str(), r.mode, r.credential.as_deref()), ("cam1", Mode::Publish, Some("s3cret")));
        assert_eq!(parse("s3cret-key").unwrap().gate_key(), "s3cret-key");
        assert_eq!(parse("play:cam1").unwrap().mode, Mode::Request);
        assert_eq!(parse("read:cam1").unwrap().name, "cam1");
    }

    #[test]
    fn errors() {
        assert_eq!(parse("#!::m=publish"), Err(StreamIdError::NoName));
        assert_eq!(parse("#!::r=a,m=listen"), Err(StreamIdError::BadMode("listen".into())));
        assert_eq!(parse("#!::r=a,junk"), Err(StreamIdError::Malformed("junk".into())));
        assert_eq!(parse(""), Err(StreamIdError::NoName));
        assert_eq!(parse(&"x".repeat(600)), Err(StreamIdError::TooLong));
    }
}
