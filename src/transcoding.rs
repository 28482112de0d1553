//! Starts a ladder for every live stream whose settings select a transcode
//! profile, and stops it when the stream ends.
//!
//! Which profile: the stream's own `transcode_profile` (admin API, or the
//! config file's `[[streams]]` entry), else its tenant's, else
//! `[transcode] default_profile`. Names resolve to the config file's
//! profiles (and the built-in `default`), then to those made through
//! `/api/v1/transcode/profiles`. A name found in neither is refused with a
//! warning (the source plays untouched). The hardware policy is resolved against the start-up
//! probe, which every ladder waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tidecast_media::{Registry, RegistryEvent};
use tidecast_transcode::probe::EncoderProbe;
use tidecast_transcode::{policy, AudioBridge, BridgeMode, Ladder, LadderReport, LadderSpec, Profile};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Finds the profile name a stream selects, if any.
pub type ProfileOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Finds a profile made through the admin API, by name.
pub type StoredProfile = Arc<dyn Fn(&str) -> Option<Profile> + Send + Sync>;

/// A profile of the admin API as the transcoder reads it (the same field
/// names; unset fields take the transcoder's defaults).
pub fn from_api(p: &tidecast_control::model::LadderProfile) -> Result<Profile, String> {
    let value = serde_json::to_value(p).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn to_api(p: &Profile) -> Option<tidecast_control::model::LadderProfile> {
    serde_json::from_value(serde_json::to_value(p).ok()?).ok()
}

/// The running ladders and their node-wide counters.
pub struct Transcoders {
    /// The config file's profiles and the built-in `default`.
    profiles: HashMap<String, Profile>,
    /// Those made through the admin API.
    stored: StoredProfile,
    ladders: Mutex<HashMap<String, Ladder>>,
    /// When streams get the audio bridge, unless their profile says.
    audio_bridge: BridgeMode,
    bridges: Mutex<HashMap<String, AudioBridge>>,
    /// Ladders started with software because `auto` found no hardware.
    pub hw_fallbacks: AtomicU64,
    /// Ladders refused (unknown profile, `require` without hardware).
    pub refused: AtomicU64,
}

impl Transcoders {
    /// Ladders from `profiles` (the built-in `default` included unless the
    /// file replaces it).
    pub fn new(
        mut profiles: HashMap<String, Profile>,
        audio_bridge: BridgeMode,
        stored: StoredProfile,
    ) -> Arc<Transcoders> {
        profiles.entry("default".to_owned()).or_insert_with(Profile::standard);
        Arc::new(Transcoders {
            profiles,
            stored,
            ladders: Mutex::new(HashMap::new()),
            audio_bridge,
            bridges: Mutex::new(HashMap::new()),
            hw_fallbacks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The profile called `name`: the config file's, else the API's.
    fn profile(&self, name: &str) -> Option<Profile> {
        self.profiles.get(name).cloned().or_else(|| (self.stored)(name))
    }

    /// Every ladder, by stream.
    pub fn reports(&self) -> Vec<(String, LadderReport)> {
        self.ladders.lock().iter().map(|(n, l)| (n.clone(), l.stats().report())).collect()
    }

    /// Follows the registry until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        registry: Registry,
        profile_of: ProfileOf,
        mut probes: watch::Receiver<Option<Arc<Vec<EncoderProbe>>>>,
        shutdown: CancellationToken,
    ) {
        let mut events = registry.events();
        // Streams that started before this task subscribed.
        let mut early: Vec<_> = registry.streams();
        loop {
            let next = match early.pop() {
                Some(s) => Ok(RegistryEvent::Started(s)),
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = events.recv() => ev,
                },
            };
            {
                match next {
                    Ok(RegistryEvent::Started(stream)) => {
                        if self.ladders.lock().contains_key(stream.name())
                            || self.bridges.lock().contains_key(stream.name())
                        {
                            continue;
                        }
                        let profile = profile_of(stream.name());
                        let mode = profile
                            .as_deref()
                            .and_then(|p| self.profile(p))
                            .and_then(|p| p.audio_bridge)
                            .unwrap_or(self.audio_bridge);
                        if mode != BridgeMode::Off {
                            // Waits for the stream's tracks: AAC gets Opus, Opus gets AAC.
                            match AudioBridge::start(stream.clone(), mode, tokio::runtime::Handle::current()) {
                                Ok(b) => {
                                    self.bridges.lock().insert(stream.name().to_owned(), b);
                                }
                                Err(e) => {
                                    warn!(stream = stream.name(), error = %e, "transcode: cannot start the audio bridge's thread")
                                }
                            }
                        }
                        let Some(name) = profile else { continue };
                        // The probe runs once at start-up; a stream that starts
                        // before it finishes waits for it.
                        let found = loop {
                            if let Some(p) = probes.borrow_and_update().clone() {
                                break p;
                            }
                            if probes.changed().await.is_err() {
                                break Arc::new(Vec::new());
                            }
                        };
                        self.start(stream, &name, &found);
                    }
                    Ok(RegistryEvent::Ended(name)) => {
                        self.bridges.lock().remove(&name);
                        if self.ladders.lock().remove(&name).is_some() {
                            info!(stream = %name, "transcode: ladder stopped (the stream ended)");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let live: std::collections::HashSet<String> =
                            registry.streams().iter().map(|s| s.name().to_owned()).collect();
                        self.ladders.lock().retain(|n, _| live.contains(n));
                        self.bridges.lock().retain(|n, _| live.contains(n));
                    }
                    Err(_) => break,
                }
            }
        }
        self.ladders.lock().clear();
        self.bridges.lock().clear();
    }

    fn start(&self, stream: Arc<tidecast_media::Stream>, name: &str, probes: &[EncoderProbe]) {
        let Some(profile) = self.profile(name) else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            warn!(stream = stream.name(), profile = name, "transcode: no such profile; the source plays untranscoded");
            return;
        };
        let choice = match policy::choose(profile.hw, probes) {
            Ok(c) => c,
            Err(why) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                warn!(
                    stream = stream.name(),
                    profile = name,
                    "transcode: ladder refused: {why}; the source plays untranscoded"
                );
                return;
            }
        };
        if let Some(why) = &choice.fell_back {
            self.hw_fallbacks.fetch_add(1, Ordering::Relaxed);
            warn!(
                stream = stream.name(),
                profile = name,
                "transcode: no hardware encoder works ({why}); using libx264"
            );
        }
        let spec = LadderSpec::new(name, profile, choice.candidates);
        let stream_name = stream.name().to_owned();
        match Ladder::start(stream, spec, tokio::runtime::Handle::current()) {
            Ok(l) => {
                info!(stream = %stream_name, profile = name, "transcode: ladder started");
                self.ladders.lock().insert(stream_name, l);
            }
            Err(e) => warn!(stream = %stream_name, error = %e, "transcode: cannot start the ladder's thread"),
        }
    }
}

impl tidecast_control::api::profiles::ProfileCatalog for Transcoders {
    fn configured(&self) -> Vec<(String, tidecast_control::model::LadderProfile)> {
        self.profiles.iter().filter_map(|(n, p)| Some((n.clone(), to_api(p)?))).collect()
    }

    fn check(&self, profile: &tidecast_control::model::LadderProfile) -> Result<(), String> {
        from_api(profile)?.validate()
    }
}

impl tidecast_control::load::TranscodeSource for Transcoders {
    fn load(&self) -> tidecast_control::load::TranscodeLoad {
        use tidecast_control::load::{BridgeStatus, LadderStatus, RungStatus, TranscodeLoad};
        let mut ladders: Vec<LadderStatus> = self
            .reports()
            .into_iter()
            .map(|(stream, r)| LadderStatus {
                stream,
                profile: r.profile,
                running: r.running,
                frames_in: r.frames_in,
                frames_decoded: r.frames_decoded,
                decode_errors: r.decode_errors,
                failures: r.failures,
                decode_cpu_seconds: r.decode_cpu_seconds,
                last_error: r.last_error,
                rungs: r
                    .rungs
                    .into_iter()
                    .map(|g| RungStatus {
                        track: g.track,
                        width: g.width,
                        height: g.height,
                        bitrate_kbps: g.bitrate_kbps,
                        encoder: g.encoder,
                        frames_out: g.frames_out,
                        bytes_out: g.bytes_out,
                        dropped: g.dropped,
                        encode_cpu_seconds: g.encode_cpu_seconds,
                        encoder_switches: g.encoder_switches,
                    })
                    .collect(),
            })
            .collect();
        ladders.sort_by(|a, b| a.stream.cmp(&b.stream));
        let mut audio_bridges: Vec<BridgeStatus> = self
            .bridges
            .lock()
            .iter()
            .map(|(stream, b)| {
                let s = b.stats();
                let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                BridgeStatus {
                    stream: stream.clone(),
                    running: s.runs.running.load(Ordering::Relaxed),
                    active: s.active.load(Ordering::Relaxed),
                    frames_in: n(&s.frames_in),
                    frames_out: n(&s.frames_out),
                    decode_errors: n(&s.decode_errors),
                    resyncs: n(&s.resyncs),
                    failures: n(&s.runs.failures),
                    last_error: s.runs.last_error.lock().clone(),
                }
            })
            .collect();
        audio_bridges.sort_by(|a, b| a.stream.cmp(&b.stream));
        TranscodeLoad {
            ladders,
            audio_bridges,
            hw_fallbacks_total: self.hw_fallbacks.load(Ordering::Relaxed),
            refused_total: self.refused.load(Ordering::Relaxed),
        }
    }
}
