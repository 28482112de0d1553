//! MistServer's trigger catalogue: names, what an answer does, payload
//! fields in MistServer's order, and whether Tidecast fires it yet.
//! The facts come from MistServer's controller; see `docs/triggers.md`.

/// What a handler's answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `true`/`false`: false refuses (or, for SYSTEM_*, stops the action).
    Gate,
    /// The answer replaces a value (stream name or URL); empty refuses.
    Rewrite,
    /// A notification; the answer is ignored.
    Notify,
}

macro_rules! catalogue {
    ($( $var:ident = $name:literal, $effect:ident, stream: $stream:literal, fires: $fires:literal, [$($field:literal),*] ;)*) => {
        /// A trigger of MistServer's catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Trigger { $($var),* }

        impl Trigger {
            /// Every trigger, in MistServer's order.
            pub const ALL: &'static [Trigger] = &[$(Trigger::$var),*];

            /// The MistServer name.
            pub fn name(self) -> &'static str {
                match self { $(Trigger::$var => $name),* }
            }

            /// What an answer does.
            pub fn effect(self) -> Effect {
                match self { $(Trigger::$var => Effect::$effect),* }
            }

            /// Whether the trigger concerns one stream (and so honours stream filters).
            pub fn stream_specific(self) -> bool {
                match self { $(Trigger::$var => $stream),* }
            }

            /// Whether Tidecast fires it today (the others are accepted and documented).
            pub fn fires(self) -> bool {
                match self { $(Trigger::$var => $fires),* }
            }

            /// Payload field names, in MistServer's line order (the JSON format's keys).
            pub fn fields(self) -> &'static [&'static str] {
                match self { $(Trigger::$var => &[$($field),*]),* }
            }

            /// Looks a trigger up by its MistServer name.
            pub fn parse(name: &str) -> Option<Trigger> {
                match name { $($name => Some(Trigger::$var),)* _ => None }
            }
        }
    };
}

catalogue! {
    SystemStart = "SYSTEM_START", Gate, stream: false, fires: true, [];
    SystemStop = "SYSTEM_STOP", Gate, stream: false, fires: true, ["reason"];
    OutputStart = "OUTPUT_START", Notify, stream: false, fires: true, ["connector"];
    OutputStop = "OUTPUT_STOP", Notify, stream: false, fires: true, ["connector"];
    StreamAdd = "STREAM_ADD", Gate, stream: true, fires: true, ["stream", "config"];
    StreamConfig = "STREAM_CONFIG", Gate, stream: true, fires: true, ["stream", "config"];
    StreamRemove = "STREAM_REMOVE", Gate, stream: true, fires: true, ["stream"];
    StreamSource = "STREAM_SOURCE", Rewrite, stream: true, fires: false, ["stream"];
    StreamLoad = "STREAM_LOAD", Gate, stream: true, fires: false, ["stream"];
    StreamReady = "STREAM_READY", Gate, stream: true, fires: true, ["stream", "input"];
    StreamUnload = "STREAM_UNLOAD", Gate, stream: true, fires: false, ["stream", "input"];
    StreamPush = "STREAM_PUSH", Gate, stream: true, fires: true, ["stream", "address", "connector", "url"];
    LiveTrackList = "LIVE_TRACK_LIST", Notify, stream: true, fires: true, ["stream", "tracks"];
    StreamBuffer = "STREAM_BUFFER", Notify, stream: true, fires: false, ["stream", "state", "health"];
    StreamEnd = "STREAM_END", Notify, stream: true, fires: true, ["stream", "bytes_down", "bytes_up", "viewers", "inputs", "outputs", "viewer_seconds"];
    InputAbort = "INPUT_ABORT", Notify, stream: true, fires: false, ["stream", "source", "binary", "pid", "code", "reason"];
    RtmpPushRewrite = "RTMP_PUSH_REWRITE", Rewrite, stream: false, fires: true, ["url", "hostname"];
    PushRewrite = "PUSH_REWRITE", Rewrite, stream: false, fires: true, ["url", "hostname", "stream"];
    PushOutStart = "PUSH_OUT_START", Rewrite, stream: true, fires: true, ["stream", "target"];
    RecordingEnd = "RECORDING_END", Notify, stream: true, fires: true, ["stream", "target", "connector", "bytes", "seconds", "start", "stop", "media_ms", "first_ms", "last_ms", "code", "reason"];
    OutputEnd = "OUTPUT_END", Notify, stream: true, fires: false, ["stream", "target", "connector", "bytes", "seconds", "start", "stop", "media_ms", "first_ms", "last_ms", "code", "reason"];
    ConnOpen = "CONN_OPEN", Gate, stream: true, fires: false, ["stream", "address", "connector", "url"];
    ConnClose = "CONN_CLOSE", Notify, stream: true, fires: false, ["stream", "address", "connector", "url"];
    ConnPlay = "CONN_PLAY", Gate, stream: true, fires: true, ["stream", "address", "connector", "url"];
    PlayRewrite = "PLAY_REWRITE", Rewrite, stream: true, fires: false, ["stream", "address", "connector", "url"];
    UserNew = "USER_NEW", Gate, stream: true, fires: true, ["stream", "address", "connection", "connector", "url", "session"];
    UserEnd = "USER_END", Notify, stream: true, fires: true, ["session", "stream", "connector", "address", "seconds", "bytes_up", "bytes_down", "tags"];
    LiveBandwidth = "LIVE_BANDWIDTH", Gate, stream: true, fires: false, ["stream", "bytes_per_second"];
    DefaultStream = "DEFAULT_STREAM", Rewrite, stream: true, fires: false, ["default", "stream", "host", "output", "url"];
    PushEnd = "PUSH_END", Notify, stream: true, fires: true, ["push_id", "stream", "target", "target_after", "log", "status"];
    LivepeerSegmentRejected = "LIVEPEER_SEGMENT_REJECTED", Notify, stream: true, fires: true, ["options", "segment", "tracks", "broadcaster", "broadcaster2"];
    RecordingSegment = "RECORDING_SEGMENT", Notify, stream: true, fires: true, ["stream", "path", "duration_ms", "start_ms", "end_ms"];
    ThumbnailUpdated = "THUMBNAIL_UPDATED", Notify, stream: true, fires: true, ["stream", "poster", "sprite", "vtt"];
    LivepeerSegmentComplete = "LIVEPEER_SEGMENT_COMPLETE", Notify, stream: true, fires: true, ["stream", "session", "seq", "start_ms", "duration_ms", "width", "height", "bytes_in", "bytes_out", "renditions_count", "attempts", "url", "turnaround_ms", "speed_factor", "renditions"];
}

/// MistServer's reading of a gate answer: true when it starts with `1`,
/// `yes`, `true` or `cont` (case and whitespace ignored).
pub fn truthy(answer: &str) -> bool {
    let s: String = answer.chars().filter(|c| !c.is_whitespace()).take(4).collect::<String>().to_ascii_lowercase();
    s.starts_with('1') || s.starts_with("yes") || s.starts_with("true") || s.starts_with("cont")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_the_catalogue_is_complete() {
        // MistServer's 31 and the FrameWorks fork's RECORDING_SEGMENT,
        // LIVEPEER_SEGMENT_COMPLETE and THUMBNAIL_UPDATED.
        assert_eq!(Trigger::ALL.len(), 34);
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.name()), Some(*t));
        }
        assert_eq!(Trigger::parse("push_rewrite"), None);
    }

    #[test]
    fn answers_read_like_mistserver() {
        for yes in ["true", "TRUE\n", "1", "yes", " cont", "Continue"] {
            assert!(truthy(yes), "{yes:?}");
        }
        for no in ["false", "0", "", "no", "deny", "ok"] {
            assert!(!truthy(no), "{no:?}");
        }
    }
}
