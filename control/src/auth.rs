//! Who may publish: stream keys from the configuration, or the open
//! development mode.

use subtle::ConstantTimeEq;
use tidecast_protocols::access::{PublishRequest, Refusal};

/// A configured stream and the key that publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamKey {
    /// The stream name viewers use.
    pub stream: String,
    /// The secret a publisher sends as its stream name (or as `?key=`).
    pub key: String,
}

/// Checks publish requests against configured keys.
///
/// A publisher sends either the key itself as the stream name
/// (`rtmp://host/live/KEY`, as OBS's "stream key" field does) or
/// `NAME?key=KEY`. In open mode (no keys configured) any name publishes the
/// stream of that name: for development only.
#[derive(Clone, Debug, Default)]
pub struct ConfigGate {
    keys: Vec<StreamKey>,
}

impl ConfigGate {
    /// A gate for `keys`; empty means open mode.
    pub fn new(keys: Vec<StreamKey>) -> ConfigGate {
        ConfigGate { keys }
    }

    /// Whether anyone may publish anything.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    fn matches(a: &str, b: &str) -> bool {
        a.as_bytes().ct_eq(b.as_bytes()).into()
    }
}

pub use tidecast_protocols::access::valid_stream_name;

impl ConfigGate {
    /// The stream `req` publishes, or why not. Open mode admits any valid name.
    pub fn check(&self, req: &PublishRequest<'_>) -> Result<String, Refusal> {
        let (name, query) = req.key.split_once('?').unwrap_or((req.key, ""));
        if self.is_open() {
            if !valid_stream_name(name) {
                return Err(Refusal::Unauthorized(format!(
                    "invalid stream name {name:?}: use letters, digits, _ - . +"
                )));
            }
            return Ok(name.to_owned());
        }
        let key_param = query.split('&').find_map(|kv| kv.strip_prefix("key="));
        // Check every key so the time taken does not depend on which matched.
        let mut found = None;
        for k in &self.keys {
            let by_name = Self::matches(name, &k.key);
            let by_param = key_param.is_some_and(|p| Self::matches(p, &k.key)) && name == k.stream;
            if (by_name || by_param) && found.is_none() {
                found = Some(k.stream.clone());
            }
        }
        found.ok_or_else(|| Refusal::Unauthorized("unknown stream key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str) -> PublishRequest<'_> {
        PublishRequest { protocol: "rtmp", app: "live", key, peer: "127.0.0.1:1".parse().unwrap() }
    }

    #[test]
    fn open_mode_publishes_by_name() {
        let g = ConfigGate::default();
        assert_eq!(g.check(&req("cam1")).unwrap(), "cam1");
        assert_eq!(g.check(&req("cam1?foo=bar")).unwrap(), "cam1");
        assert!(g.check(&req("../x")).is_err());
    }

    #[test]
    fn keys_map_to_streams() {
        let g = ConfigGate::new(vec![StreamKey { stream: "show".into(), key: "s3cret".into() }]);
        assert_eq!(g.check(&req("s3cret")).unwrap(), "show");
        assert_eq!(g.check(&req("show?key=s3cret")).unwrap(), "show");
        assert!(g.check(&req("show")).is_err());
        assert!(g.check(&req("other?key=s3cret")).is_err());
        assert_eq!(g.check(&req("wrong")).unwrap_err().reason(), "unknown stream key");
    }
}
