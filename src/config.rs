//! Configuration: embedded defaults, then a TOML file, then `TIDECAST_*`
//! environment variables and command-line flags (`ServeArgs` in `main.rs`,
//! each flag with its `TIDECAST_*` variable).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where state lives.
    pub data_dir: PathBuf,
    /// tracing filter, e.g. `info` or `tidecast=debug`.
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// RTMP ingest.
    pub rtmp: Rtmp,
    /// SRT publish and play.
    pub srt: Srt,
    /// Playback over HTTP.
    pub http: Http,
    /// The admin API.
    pub admin: Admin,
    /// The media core.
    pub media: Media,
    /// LL-HLS.
    pub hls: Hls,
    /// LL-DASH (served from the same segments as LL-HLS).
    pub dash: Dash,
    /// WHIP and WHEP.
    pub webrtc: WebRtc,
    /// Transcoding ladders.
    pub transcode: Transcode,
    /// Restreams and recordings.
    pub push: Push,
    /// Stream keys; none means open development mode.
    pub streams: Vec<StreamEntry>,
}

/// Pushes: restreams and recordings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Push {
    /// Where recordings are written (nothing is written outside it);
    /// unset: `DATA_DIR/recordings`.
    pub recordings_dir: Option<PathBuf>,
    /// Where `s3://` recordings are uploaded.
    pub s3: S3,
    /// PEM certificates trusted for `rtmps://` and `whip+https://` targets
    /// besides the public roots (a private CA).
    pub tls_ca_file: Option<PathBuf>,
}

/// S3 (or an S3-compatible server) for `s3://` push targets; what is left
/// out comes from the `AWS_*` environment variables.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rtmp {
    pub listen: SocketAddr,
    pub chunk_size: u32,
    pub max_message_bytes: u32,
    pub idle_timeout_seconds: f64,
    pub max_connections: usize,
    /// Milliseconds a player's media may wait to be written together with
    /// what follows (0: each frame at once).
    pub play_flush_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Srt {
    pub listen: SocketAddr,
    /// TSBPD latency offered to callers, in milliseconds.
    pub latency_ms: u64,
    /// AES passphrase for every SRT connection (10 to 79 characters), unless a
    /// stream has its own `srt_passphrase`.
    pub passphrase: Option<String>,
}

impl Default for Srt {
    fn default() -> Self {
        Srt { listen: ([0, 0, 0, 0], 8889).into(), latency_ms: 120, passphrase: None }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Admin API, `/metrics` and health probes. Loopback by default: put a
    /// TLS proxy in front before exposing it.
    pub listen: SocketAddr,
    /// Failed authentications (API keys, stream keys, playback tokens) one
    /// address may make per minute before it is refused everything for the
    /// rest of that minute; 0 turns the limit off.
    pub auth_failures_per_minute: u32,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: ([127, 0, 0, 1], 4242).into(), auth_failures_per_minute: 20 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Seconds of media each stream keeps behind the live edge.
    pub buffer_seconds: f64,
    /// Hard cap on a stream's buffered payload bytes.
    pub max_buffer_bytes: usize,
    /// How long a stream waits for its publisher to come back.
    pub reconnect_grace_seconds: f64,
    /// A second publisher on a live name takes over instead of being refused.
    pub takeover: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hls {
    pub segment_seconds: f64,
    pub part_seconds: f64,
    pub playlist_segments: usize,
    /// How long an ended stream's playlists and segments stay up.
    pub linger_seconds: f64,
    /// Cap on one stream's LL-HLS window, all renditions together.
    pub max_window_bytes: usize,
    /// Where packaged segments and parts (LL-HLS and LL-DASH) are kept.
    pub store: PackagedStore,
    /// How far back viewers may rewind a stream without its own
    /// `buffer_secs` (0: `playlist_segments` segments).
    pub dvr_seconds: u32,
    /// DVR windows longer than `playlist_segments` segments are kept on
    /// disk under the data directory, only the newest `playlist_segments`
    /// in memory.
    pub dvr_on_disk: bool,
    /// Cap on one stream's DVR window on disk, all renditions together.
    pub dvr_max_disk_bytes: usize,
}

/// Where packaged media lives (`hls.store`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackagedStore {
    /// Anonymous in-memory files (`memfd`).
    #[default]
    Memory,
    /// Unlinked files in `DATA_DIR/packaged`: page cache the kernel may
    /// write out and reclaim.
    Disk,
}

/// LL-DASH: `/dash/{stream}/index.mpd`. Segments and parts are LL-HLS's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dash {
    /// The latency target the MPD's `ServiceDescription` asks players to
    /// keep, in seconds; unset: half of a segment less a part, plus three
    /// parts, at least one second (1.5 s with the default 2 s / 0.2 s).
    pub latency_target_seconds: Option<f64>,
}

/// WHIP ingest and WHEP playback: one UDP port for every peer, ICE-TCP as
/// the fallback, ICE-lite.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtc {
    /// Address to bind; `0.0.0.0` binds every interface address (each
    /// becomes a host candidate).
    pub bind: IpAddr,
    /// Whether peers may connect over UDP.
    pub udp: bool,
    /// The UDP port all peers share (0: any free port).
    pub udp_port: u16,
    /// Whether peers may fall back to ICE-TCP.
    pub tcp: bool,
    /// The ICE-TCP port, passive (0: any free port).
    pub tcp_port: u16,
    /// Public addresses of a 1:1 NAT in front of this server.
    pub public_ips: Vec<IpAddr>,
    /// `host:port` of a STUN server to learn the public address from at start.
    pub stun_server: Option<String>,
    /// STUN/TURN servers handed to clients in `Link` headers.
    pub ice_servers: Vec<IceServerEntry>,
    /// How often WHIP publishers are asked for a keyframe.
    pub keyframe_interval_seconds: f64,
    /// How long ICE and DTLS may take before a session is dropped.
    pub connect_timeout_seconds: f64,
    /// Most WebRTC sessions at once.
    pub max_sessions: usize,
}

impl Default for WebRtc {
    fn default() -> Self {
        WebRtc {
            bind: IpAddr::from([0, 0, 0, 0]),
            udp: true,
            udp_port: 8189,
            tcp: true,
            tcp_port: 8189,
            public_ips: Vec::new(),
            stun_server: None,
            ice_servers: Vec::new(),
            keyframe_interval_seconds: 1.0,
            connect_timeout_seconds: 15.0,
            max_sessions: 2000,
        }
    }
}

/// Transcoding: named ladder profiles, and the one streams get when they
/// select none.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Transcode {
    /// The audio bridge: AAC sources get an Opus track (WebRTC viewers hear
    /// them), Opus sources an AAC track (LL-HLS, DASH and RTMP players hear
    /// them). `"auto"` (the default): AAC from the start, Opus once a WHEP
    /// viewer asks; `"always"`: both from the start; `"off"`. `true` and
    /// `false` are read as `"always"` and `"off"`. A profile may set its own.
    #[serde(deserialize_with = "bridge_mode")]
    pub audio_bridge: tidecast_transcode::BridgeMode,
    /// The profile of streams that select none (unset: such streams are
    /// not transcoded). `default` is built in: 720p, 480p, 360p, 240p.
    pub default_profile: Option<String>,
    /// `[transcode.profiles.NAME]`: rungs, H.264 profile, x264 preset and
    /// the hardware policy (`hw = "auto" | "require" | "off"`). A profile
    /// named `default` replaces the built-in one.
    pub profiles: std::collections::HashMap<String, tidecast_transcode::Profile>,
    /// `[transcode.livepeer]`: the gateways of profiles with
    /// `backend = "livepeer"`.
    pub livepeer: LivepeerConfig,
}

/// Livepeer gateways (go-livepeer broadcasters with HTTP ingest).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LivepeerConfig {
    /// Gateway base URLs, tried in order (`http://127.0.0.1:9935`; 9935 is
    /// go-livepeer's default HTTP port).
    pub gateways: Vec<String>,
    /// When every gateway fails: `"local"` (the profile's rungs on this
    /// node's encoders) or `"none"` (the source alone).
    pub fallback: LivepeerFallback,
    /// Segment uploads in flight per stream.
    pub in_flight: usize,
}

impl Default for LivepeerConfig {
    fn default() -> Self {
        LivepeerConfig { gateways: Vec::new(), fallback: LivepeerFallback::Local, in_flight: 2 }
    }
}

/// What a Livepeer profile does when every gateway fails.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LivepeerFallback {
    /// Run the profile's rungs locally.
    Local,
    /// Play the source alone.
    None,
}

impl Default for Transcode {
    fn default() -> Self {
        Transcode {
            audio_bridge: tidecast_transcode::BridgeMode::Auto,
            default_profile: None,
            profiles: std::collections::HashMap::new(),
            livepeer: LivepeerConfig::default(),
        }
    }
}

/// `audio_bridge`: a mode, or the boolean of earlier versions.
fn bridge_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<tidecast_transcode::BridgeMode, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Flag(bool),
        Mode(tidecast_transcode::BridgeMode),
    }
    Ok(match Setting::deserialize(d)? {
        Setting::Flag(true) => tidecast_transcode::BridgeMode::Always,
        Setting::Flag(false) => tidecast_transcode::BridgeMode::Off,
        Setting::Mode(m) => m,
    })
}

/// One ICE server for clients.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServerEntry {
    /// `stun:host:port` or `turn:host:port`.
    pub url: String,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamEntry {
    pub name: String,
    pub key: String,
    /// AES passphrase for this stream's SRT links (publish and play).
    pub srt_passphrase: Option<String>,
    /// The transcode profile this stream uses (else `transcode.default_profile`).
    #[serde(default)]
    pub transcode_profile: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            log: "info".into(),
            log_format: "text".into(),
            rtmp: Rtmp::default(),
            srt: Srt::default(),
            http: Http::default(),
            admin: Admin::default(),
            media: Media::default(),
            hls: Hls::default(),
            dash: Dash::default(),
            webrtc: WebRtc::default(),
            transcode: Transcode::default(),
            push: Push::default(),
            streams: Vec::new(),
        }
    }
}

impl Default for Rtmp {
    fn default() -> Self {
        Rtmp {
            listen: ([0, 0, 0, 0], 1935).into(),
            chunk_size: 60_000,
            max_message_bytes: 8 << 20,
            idle_timeout_seconds: 30.0,
            max_connections: 1000,
            play_flush_ms: 200,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http { listen: ([0, 0, 0, 0], 8080).into() }
    }
}

impl Default for Media {
    fn default() -> Self {
        Media { buffer_seconds: 10.0, max_buffer_bytes: 64 << 20, reconnect_grace_seconds: 5.0, takeover: false }
    }
}

impl Default for Hls {
    fn default() -> Self {
        Hls {
            segment_seconds: 2.0,
            part_seconds: 0.2,
            playlist_segments: 10,
            linger_seconds: 30.0,
            max_window_bytes: 64 << 20,
            store: PackagedStore::Memory,
            dvr_seconds: 0,
            dvr_on_disk: true,
            dvr_max_disk_bytes: 4 << 30,
        }
    }
}

fn secs(what: &str, v: f64, min: f64, max: f64) -> anyhow::Result<Duration> {
    if !(min..=max).contains(&v) {
        bail!("{what} must be between {min} and {max} seconds, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Checks ranges and returns the durations the server needs.
    pub fn validate(&self) -> anyhow::Result<Validated> {
        let v = Validated {
            buffer: secs("media.buffer_seconds", self.media.buffer_seconds, 1.0, 3600.0)?,
            grace: secs("media.reconnect_grace_seconds", self.media.reconnect_grace_seconds, 0.0, 600.0)?,
            segment: secs("hls.segment_seconds", self.hls.segment_seconds, 0.5, 30.0)?,
            part: secs("hls.part_seconds", self.hls.part_seconds, 0.05, 5.0)?,
            hls_linger: secs("hls.linger_seconds", self.hls.linger_seconds, 0.0, 3600.0)?,
            dash_latency_target: match self.dash.latency_target_seconds {
                Some(s) => Some(secs("dash.latency_target_seconds", s, 0.2, 60.0)?),
                None => None,
            },
            rtmp_idle: secs("rtmp.idle_timeout_seconds", self.rtmp.idle_timeout_seconds, 1.0, 3600.0)?,
            keyframe_interval: secs(
                "webrtc.keyframe_interval_seconds",
                self.webrtc.keyframe_interval_seconds,
                0.5,
                60.0,
            )?,
            webrtc_connect: secs("webrtc.connect_timeout_seconds", self.webrtc.connect_timeout_seconds, 1.0, 120.0)?,
        };
        if !self.webrtc.udp && !self.webrtc.tcp {
            bail!("webrtc: enable udp, tcp or both");
        }
        for s in &self.webrtc.ice_servers {
            if !["stun:", "stuns:", "turn:", "turns:"].iter().any(|p| s.url.starts_with(p)) {
                bail!("webrtc.ice_servers: {:?} must start with stun:, stuns:, turn: or turns:", s.url);
            }
            if s.url.chars().any(|c| c == '>' || c == '"' || c.is_control()) {
                bail!("webrtc.ice_servers: {:?} has characters a Link header cannot carry", s.url);
            }
        }
        if v.part >= v.segment {
            bail!("hls.part_seconds must be shorter than hls.segment_seconds");
        }
        if self.hls.dvr_max_disk_bytes < 1 << 20 {
            bail!("hls.dvr_max_disk_bytes must be at least 1048576");
        }
        if self.hls.max_window_bytes < 1 << 20 {
            bail!("hls.max_window_bytes must be at least 1048576");
        }
        if self.hls.playlist_segments < 3 {
            bail!("hls.playlist_segments must be at least 3");
        }
        if self.rtmp.max_connections == 0 {
            bail!("rtmp.max_connections must be at least 1");
        }
        if self.rtmp.play_flush_ms > 1000 {
            bail!("rtmp.play_flush_ms must be at most 1000");
        }
        if !(128..=1 << 24).contains(&self.rtmp.chunk_size) {
            bail!("rtmp.chunk_size must be between 128 and 16777216");
        }
        let passphrase_ok = |p: &Option<String>| p.as_ref().is_none_or(|p| (10..=79).contains(&p.len()));
        if !passphrase_ok(&self.srt.passphrase) {
            bail!("srt.passphrase must be 10 to 79 characters long");
        }
        if !(20..=10_000).contains(&self.srt.latency_ms) {
            bail!("srt.latency_ms must be between 20 and 10000");
        }
        for (name, p) in &self.transcode.profiles {
            if let Err(e) = p.validate() {
                bail!("transcode.profiles.{name}: {e}");
            }
            if p.backend == tidecast_transcode::Backend::Livepeer && self.transcode.livepeer.gateways.is_empty() {
                bail!("transcode.profiles.{name} uses Livepeer, but transcode.livepeer.gateways is empty");
            }
        }
        for g in &self.transcode.livepeer.gateways {
            if !(g.starts_with("http://") || g.starts_with("https://")) {
                bail!("transcode.livepeer.gateways: {g:?} is not an http:// or https:// URL");
            }
        }
        if !(1..=8).contains(&self.transcode.livepeer.in_flight) {
            bail!("transcode.livepeer.in_flight must be between 1 and 8");
        }
        let known = |n: &str| n == "default" || self.transcode.profiles.contains_key(n);
        if let Some(d) = &self.transcode.default_profile {
            if !known(d) {
                bail!("transcode.default_profile {d:?} is not a configured profile");
            }
        }
        for s in &self.streams {
            if let Some(p) = s.transcode_profile.as_deref().filter(|p| !known(p)) {
                bail!("stream {:?}: transcode_profile {p:?} is not a configured profile", s.name);
            }
            if !passphrase_ok(&s.srt_passphrase) {
                bail!("the srt_passphrase of stream {:?} must be 10 to 79 characters long", s.name);
            }
            if !tidecast_control::auth::valid_stream_name(&s.name) {
                bail!("stream name {:?} is not valid: use letters, digits, _ - . +", s.name);
            }
            if s.key.len() < 8 {
                bail!("the key of stream {:?} is shorter than 8 characters", s.name);
            }
        }
        Ok(v)
    }
}

/// Durations checked by [`Config::validate`].
#[derive(Debug)]
pub struct Validated {
    pub buffer: Duration,
    pub grace: Duration,
    pub segment: Duration,
    pub part: Duration,
    pub hls_linger: Duration,
    pub dash_latency_target: Option<Duration>,
    pub rtmp_idle: Duration,
    pub keyframe_interval: Duration,
    pub webrtc_connect: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_file_overrides() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str(
            "[rtmp]\nlisten = \"127.0.0.1:1936\"\n[hls]\npart_seconds = 0.3\n[[streams]]\nname = \"show\"\nkey = \"0123456789\"\n",
        )
        .unwrap();
        assert_eq!(c.rtmp.listen.port(), 1936);
        assert_eq!(c.hls.part_seconds, 0.3);
        assert_eq!(c.hls.segment_seconds, 2.0);
        assert_eq!(c.streams.len(), 1);
        c.validate().unwrap();
    }

    #[test]
    fn the_example_config_is_valid() {
        let c: Config = toml::from_str(include_str!("../examples/tidecast.toml")).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[rtmp]\nlisten = \"nowhere\"\n").is_err());
        assert!(toml::from_str::<Config>("typo = 1\n").is_err());
        let mut c = Config::default();
        c.hls.part_seconds = 3.0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.streams.push(StreamEntry {
            name: "a/b".into(),
            key: "0123456789".into(),
            srt_passphrase: None,
            transcode_profile: None,
        });
        assert!(c.validate().is_err());
    }

    #[test]
    fn transcode_profiles_are_read_and_checked() {
        let c: Config = toml::from_str(
            "[transcode]\ndefault_profile = \"small\"\n[transcode.profiles.small]\nhw = \"off\"\nrungs = [{ height = 360, bitrate_kbps = 800 }, { height = 240, bitrate_kbps = 400, max_fps = 15 }]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.transcode.profiles["small"].rungs.len(), 2);
        let unknown: Config = toml::from_str("[transcode]\ndefault_profile = \"nope\"\n").unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("nope"));
        let bad: Config = toml::from_str(
            "[transcode.profiles.x]\nrungs = [{ height = 360, bitrate_kbps = 800 }]\npreset = \"placebo\"\n",
        )
        .unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("preset"));
    }

    #[test]
    fn packaged_media_is_kept_in_memory_unless_disk_is_asked_for() {
        assert_eq!(Config::default().hls.store, PackagedStore::Memory);
        let c: Config = toml::from_str("[hls]\nstore = \"disk\"\n").unwrap();
        assert_eq!(c.hls.store, PackagedStore::Disk);
        assert!(toml::from_str::<Config>("[hls]\nstore = \"tape\"\n").is_err());
    }

    #[test]
    fn audio_bridge_takes_a_mode_or_the_old_boolean() {
        use tidecast_transcode::BridgeMode;
        let read = |v: &str| {
            toml::from_str::<Config>(&format!("[transcode]\naudio_bridge = {v}\n")).map(|c| c.transcode.audio_bridge)
        };
        assert_eq!(Config::default().transcode.audio_bridge, BridgeMode::Auto);
        assert_eq!(read("\"always\"").unwrap(), BridgeMode::Always);
        assert_eq!(read("\"off\"").unwrap(), BridgeMode::Off);
        assert_eq!(read("true").unwrap(), BridgeMode::Always);
        assert_eq!(read("false").unwrap(), BridgeMode::Off);
        assert!(read("\"sometimes\"").is_err());
    }
}
