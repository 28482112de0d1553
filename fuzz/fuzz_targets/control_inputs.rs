//! What the control plane reads from strangers: admin API request bodies,
//! playback tokens (from any viewer), and webhook answers. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidecast_control::api::{
    NewApiKey, NewStream, NewStreamKey, NewTenant, NewToken, NewTrigger, StreamUpdate, TenantUpdate,
};
use tidecast_control::tokens::TokenSigner;
use tidecast_control::triggers::truthy;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            let _ = serde_json::from_slice::<NewTenant>(rest);
            let _ = serde_json::from_slice::<TenantUpdate>(rest);
            let _ = serde_json::from_slice::<NewApiKey>(rest);
            let _ = serde_json::from_slice::<NewStream>(rest);
            let _ = serde_json::from_slice::<StreamUpdate>(rest);
            let _ = serde_json::from_slice::<NewStreamKey>(rest);
            let _ = serde_json::from_slice::<NewToken>(rest);
            let _ = serde_json::from_slice::<NewTrigger>(rest);
        }
        1 => {
            let signer = TokenSigner::new(b"fuzz".to_vec());
            let token = String::from_utf8_lossy(rest);
            let _ = signer.verify(&token, "cam", "127.0.0.1".parse().unwrap(), 1_700_000_000);
        }
        _ => {
            let _ = truthy(&String::from_utf8_lossy(rest));
        }
    }
});
