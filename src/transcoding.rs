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
use tidecast_protocols::livepeer::{LivepeerEvent, LivepeerJob, LivepeerSpec, LivepeerStats, Rendition};
use tidecast_transcode::probe::EncoderProbe;
use tidecast_transcode::{policy, AudioBridge, Backend, BridgeMode, Ladder, LadderReport, LadderSpec, Profile};

use crate::config::{LivepeerConfig, LivepeerFallback};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Finds the profile name a stream selects, if any.
pub type ProfileOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Hears what Livepeer offloads report (completed and rejected segments).
pub type LivepeerNotify = Arc<dyn Fn(LivepeerEvent) + Send + Sync>;

/// A stream's Livepeer offload: its counters, and whether it fell back to
/// a local ladder.
struct Offload {
    profile: String,
    job: Option<LivepeerJob>,
    stats: Arc<LivepeerStats>,
    fell_back: bool,
}

/// Fires MistServer's `LIVEPEER_SEGMENT_REJECTED` and the FrameWorks
/// fork's `LIVEPEER_SEGMENT_COMPLETE` for what an offload reports.
pub fn livepeer_trigger(plane: &tidecast_control::plane::ControlPlane, ev: LivepeerEvent) {
    use tidecast_control::triggers::Trigger;
    match ev {
        LivepeerEvent::Complete(r) => {
            let speed = if r.turnaround_ms == 0 { 0.0 } else { r.duration_ms as f64 / r.turnaround_ms as f64 };
            let fields = vec![
                r.stream.clone(),
                r.manifest,
                r.seq.to_string(),
                r.start_ms.to_string(),
                r.duration_ms.to_string(),
                r.width.to_string(),
                r.height.to_string(),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                r.renditions.len().to_string(),
                r.attempts.to_string(),
                r.gateway,
                r.turnaround_ms.to_string(),
                format!("{speed:.3}"),
                serde_json::to_string(&r.renditions).unwrap_or_default(),
            ];
            plane.notify_stream(Trigger::LivepeerSegmentComplete, &r.stream, fields);
        }
        LivepeerEvent::Rejected { stream, configuration, segment, track, gateway, other } => {
            use base64::Engine;
            let fields = vec![
                configuration,
                base64::engine::general_purpose::STANDARD.encode(&segment),
                track,
                gateway,
                other.unwrap_or_else(|| "N/A".to_owned()),
            ];
            plane.notify_stream(Trigger::LivepeerSegmentRejected, &stream, fields);
        }
    }
}

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
    /// Gateways and fallback of `backend = "livepeer"` profiles.
    livepeer: LivepeerConfig,
    offloads: Mutex<HashMap<String, Offload>>,
    notify: LivepeerNotify,
}

impl Transcoders {
    /// Ladders from `profiles` (the built-in `default` included unless the
    /// file replaces it).
    pub fn new(
        mut profiles: HashMap<String, Profile>,
        audio_bridge: BridgeMode,
        stored: StoredProfile,
        livepeer: LivepeerConfig,
        notify: LivepeerNotify,
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
            livepeer,
            offloads: Mutex::new(HashMap::new()),
            notify,
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
                            || self.offloads.lock().contains_key(stream.name())
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
                        self.offloads.lock().remove(&name);
                        if self.ladders.lock().remove(&name).is_some() {
                            info!(stream = %name, "transcode: ladder stopped (the stream ended)");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let live: std::collections::HashSet<String> =
                            registry.streams().iter().map(|s| s.name().to_owned()).collect();
                        self.ladders.lock().retain(|n, _| live.contains(n));
                        self.bridges.lock().retain(|n, _| live.contains(n));
                        self.offloads.lock().retain(|n, _| live.contains(n));
                    }
                    Err(_) => break,
                }
            }
        }
        self.ladders.lock().clear();
        self.bridges.lock().clear();
        self.offloads.lock().clear();
    }

    fn start(self: &Arc<Self>, stream: Arc<tidecast_media::Stream>, name: &str, probes: &Arc<Vec<EncoderProbe>>) {
        let Some(profile) = self.profile(name) else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            warn!(stream = stream.name(), profile = name, "transcode: no such profile; the source plays untranscoded");
            return;
        };
        match profile.backend {
            Backend::Local => self.start_local(stream, name, profile, probes),
            Backend::Livepeer => self.start_livepeer(stream, name, profile, probes.clone()),
        }
    }

    /// Offloads the profile's rungs to the Livepeer gateways; with
    /// `fallback = "local"`, a watcher starts the local ladder instead once
    /// every gateway is failing.
    fn start_livepeer(
        self: &Arc<Self>,
        stream: Arc<tidecast_media::Stream>,
        name: &str,
        profile: Profile,
        probes: Arc<Vec<EncoderProbe>>,
    ) {
        let planning = profile.clone();
        let plan = Box::new(move |w: u32, h: u32, fps: f64| {
            planning
                .plan(w, h)
                .into_iter()
                .map(|r| Rendition {
                    name: format!("{}p", r.height),
                    width: r.width,
                    height: r.height,
                    bitrate_kbps: r.bitrate_kbps,
                    fps: r.max_fps.map_or(fps, |m| m.min(fps)),
                    h264_profile: planning.h264_profile.clone(),
                })
                .collect()
        });
        let spec = LivepeerSpec {
            profile: name.to_owned(),
            plan,
            gateways: self.livepeer.gateways.clone(),
            in_flight: self.livepeer.in_flight,
        };
        let job = LivepeerJob::start(stream.clone(), spec, self.notify.clone());
        let stats = job.stats().clone();
        let stream_name = stream.name().to_owned();
        info!(stream = %stream_name, profile = name, gateways = ?self.livepeer.gateways, "transcode: offloading to Livepeer");
        self.offloads.lock().insert(
            stream_name.clone(),
            Offload { profile: name.to_owned(), job: Some(job), stats: stats.clone(), fell_back: false },
        );
        if self.livepeer.fallback != LivepeerFallback::Local {
            return;
        }
        let me = Arc::downgrade(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if stream.is_ended() {
                    return;
                }
                if !stats.down.load(Ordering::Relaxed) {
                    continue;
                }
                {
                    let mut offloads = me.offloads.lock();
                    let Some(o) = offloads.get_mut(&stream_name).filter(|o| !o.fell_back) else { return };
                    o.job = None; // withdraws the Livepeer renditions
                    o.fell_back = true;
                }
                warn!(stream = %stream_name, profile = %name, "transcode: every Livepeer gateway is failing; the local ladder takes over");
                me.start_local(stream, &name, profile, &probes);
                return;
            }
        });
    }

    fn start_local(&self, stream: Arc<tidecast_media::Stream>, name: &str, profile: Profile, probes: &[EncoderProbe]) {
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
        use tidecast_control::load::{BridgeStatus, LadderStatus, LivepeerStatus, RungStatus, TranscodeLoad};
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
        let mut livepeer: Vec<LivepeerStatus> = self
            .offloads
            .lock()
            .iter()
            .map(|(stream, o)| {
                let s = &o.stats;
                let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
                LivepeerStatus {
                    stream: stream.clone(),
                    profile: o.profile.clone(),
                    gateway: s.gateway.lock().clone(),
                    segments_sent: n(&s.segments_sent),
                    segments_done: n(&s.segments_done),
                    segments_failed: n(&s.segments_failed),
                    segments_skipped: n(&s.segments_skipped),
                    rejected: n(&s.rejected),
                    gateway_switches: n(&s.gateway_switches),
                    bad_parts: n(&s.bad_parts),
                    last_turnaround_ms: n(&s.last_turnaround_ms),
                    speed_factor: n(&s.last_speed_milli) as f64 / 1000.0,
                    down: s.down.load(Ordering::Relaxed),
                    fell_back_to_local: o.fell_back,
                    last_error: s.last_error.lock().clone(),
                }
            })
            .collect();
        livepeer.sort_by(|a, b| a.stream.cmp(&b.stream));
        TranscodeLoad {
            livepeer,
            ladders,
            audio_bridges,
            hw_fallbacks_total: self.hw_fallbacks.load(Ordering::Relaxed),
            refused_total: self.refused.load(Ordering::Relaxed),
        }
    }
}
