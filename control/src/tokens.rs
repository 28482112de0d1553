//! Playback tokens: signed, expiring, bound to one stream and optionally to
//! one viewer IP. `base64url(claims JSON) "." base64url(HMAC-SHA256)`, under
//! a node secret kept in the store. Stateless to check: no store read.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::secrets::{ct_eq, hmac};

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stream name.
    pub s: String,
    /// Expiry, Unix seconds.
    pub e: i64,
    /// The only viewer address allowed, if bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// Why a token does not play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The stream needs a token and none was given.
    #[error("this stream needs a playback token")]
    Missing,
    /// Not a token we signed.
    #[error("invalid playback token")]
    Invalid,
    /// Past its expiry.
    #[error("playback token expired")]
    Expired,
    /// Signed for another stream.
    #[error("playback token is for another stream")]
    WrongStream,
    /// Bound to another viewer address.
    #[error("playback token is bound to another address")]
    WrongAddress,
}

/// Signs and checks playback tokens.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl TokenSigner {
    /// A signer with the node's secret.
    pub fn new(secret: Vec<u8>) -> TokenSigner {
        TokenSigner { secret }
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let sig = URL_SAFE_NO_PAD.encode(hmac(&self.secret, &[body.as_bytes()]));
        format!("{body}.{sig}")
    }

    /// Checks `token` for playing `stream` from `peer` at `now_s`.
    pub fn verify(&self, token: &str, stream: &str, peer: IpAddr, now_s: i64) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Invalid)?;
        if !ct_eq(&sig, &hmac(&self.secret, &[body.as_bytes()])) {
            return Err(TokenError::Invalid);
        }
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if now_s >= claims.e {
            return Err(TokenError::Expired);
        }
        if claims.s != stream {
            return Err(TokenError::WrongStream);
        }
        if claims.ip.is_some_and(|ip| ip != peer) {
            return Err(TokenError::WrongAddress);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_signature_expiry_stream_and_address() {
        let signer = TokenSigner::new(b"node secret".to_vec());
        let home: IpAddr = "10.0.0.1".parse().unwrap();
        let t = signer.sign(&Claims { s: "cam".into(), e: 100, ip: Some(home) });
        assert!(signer.verify(&t, "cam", home, 99).is_ok());
        assert_eq!(signer.verify(&t, "cam", home, 100), Err(TokenError::Expired));
        assert_eq!(signer.verify(&t, "other", home, 1), Err(TokenError::WrongStream));
        assert_eq!(signer.verify(&t, "cam", "10.0.0.2".parse().unwrap(), 1), Err(TokenError::WrongAddress));
        let other = TokenSigner::new(b"another node".to_vec());
        assert_eq!(other.verify(&t, "cam", home, 1), Err(TokenError::Invalid));
        // A token whose claims were edited no longer verifies.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"s":"cam","e":999999}"#);
        assert_eq!(signer.verify(&format!("{forged}.{sig}"), "cam", home, 1), Err(TokenError::Invalid));
        for junk in ["", ".", "a.b", "!!!.???"] {
            assert_eq!(signer.verify(junk, "cam", home, 1), Err(TokenError::Invalid));
        }
    }
}
