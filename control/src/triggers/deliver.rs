//! One trigger request: the body in the handler's format, MistServer's
//! headers, and our signature.

use std::time::Duration;

use crate::model::{PayloadFormat, TriggerHandler};
use crate::secrets::{hmac, now_ms, random_id};

use super::Trigger;

/// The signature header: `t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
pub const SIGNATURE_HEADER: &str = "x-tidecast-signature";

/// The signature header's value for `body` sent at `t_ms`.
pub fn signature(secret: &str, t_ms: i64, body: &[u8]) -> String {
    let t = t_ms.to_string();
    format!("t={t},v1={}", hex::encode(hmac(secret.as_bytes(), &[t.as_bytes(), b".", body])))
}

/// Payload fields that hold JSON documents: embedded as JSON in the JSON format.
const JSON_FIELDS: &[&str] = &["config", "tracks", "health", "connector", "log", "status", "options", "renditions"];

fn body(h: &TriggerHandler, trigger: Trigger, fields: &[String]) -> (&'static str, Vec<u8>) {
    match h.format {
        PayloadFormat::Mist => ("text/plain", fields.join("\n").into_bytes()),
        PayloadFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("trigger".into(), trigger.name().into());
            for (name, value) in trigger.fields().iter().zip(fields) {
                let v = match JSON_FIELDS.contains(name) {
                    true => serde_json::from_str(value).unwrap_or_else(|_| value.clone().into()),
                    false => value.clone().into(),
                };
                obj.insert((*name).into(), v);
            }
            ("application/json", serde_json::Value::Object(obj).to_string().into_bytes())
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Connection, TLS or timeout.
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The receiver answered with an error status.
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
}

/// POSTs one trigger; returns the answer body.
pub async fn post(
    client: &reqwest::Client,
    h: &TriggerHandler,
    trigger: Trigger,
    fields: &[String],
    instance: &str,
) -> Result<String, DeliveryError> {
    let (content_type, body) = body(h, trigger, fields);
    let t = now_ms();
    let resp = client
        .post(&h.url)
        .timeout(Duration::from_millis(u64::from(h.timeout_ms.max(1))))
        .header("content-type", content_type)
        .header("x-trigger", trigger.name())
        .header("x-trigger-uuid", random_id().unwrap_or_default())
        .header("x-trigger-unixmillis", t.to_string())
        .header("x-instance", instance)
        .header("x-name", "tidecast")
        .header(SIGNATURE_HEADER, signature(&h.secret, t, &body))
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(DeliveryError::Status(resp.status()));
    }
    Ok(resp.text().await?)
}
