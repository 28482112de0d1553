//! Recordings: a push into files under the recording root (fragmented
//! MP4, MPEG-TS, FLV, HLS on disk), split at keyframes, uploaded to S3
//! when the target says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tidecast_media::Stream;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::{mp4, s3, target, Attempt, Deps, Push, PushHooks, PushState, SegmentReport};
use crate::flv::egress::{FlvEgress, FlvFile};

/// A recording's container, fed events.
enum Writer {
    Flv(Box<(FlvEgress, FlvFile)>),
    Mp4(mp4::Mp4Recorder),
    /// The muxer (once the tracks are known), the first and last dts, and
    /// whether the tracks were selected (`?video=&audio=`: all of them
    /// go in, a rung too).
    Ts(Option<crate::mpegts::TsMuxer>, Option<(i64, i64)>, bool),
}

impl Writer {
    fn new(container: target::Container, selected: bool, faststart: bool) -> Writer {
        match container {
            target::Container::Flv => Writer::Flv(Box::new((FlvEgress::new(None), FlvFile::new(true, true)))),
            target::Container::Mp4 if faststart => Writer::Mp4(mp4::Mp4Recorder::with_index()),
            target::Container::Mp4 => Writer::Mp4(mp4::Mp4Recorder::new()),
            target::Container::Ts | target::Container::Hls => Writer::Ts(None, None, selected),
        }
    }

    fn event(&mut self, ev: tidecast_media::Event, out: &mut Vec<Bytes>) {
        match self {
            Writer::Flv(flv) => {
                let (egress, file) = &mut **flv;
                egress.event(ev, file);
                out.extend(file.take());
            }
            Writer::Mp4(rec) => out.extend(rec.event(ev)),
            Writer::Ts(mux, span, selected) => match ev {
                tidecast_media::Event::Tracks(t) if *selected => *mux = Some(crate::mpegts::TsMuxer::new(&t)),
                tidecast_media::Event::Tracks(t) => {
                    *mux = Some(crate::mpegts::TsMuxer::new(&crate::mpegts::output::ts_tracks(&t)));
                }
                tidecast_media::Event::Frame(f) => {
                    if let Some(packets) = mux.as_mut().and_then(|m| m.frame(&f)) {
                        let (_, last) = span.get_or_insert((f.dts, f.dts));
                        *last = (*last).max(f.dts);
                        out.push(packets);
                    }
                }
                tidecast_media::Event::Discontinuity => {}
            },
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if let Writer::Mp4(rec) = self {
            out.extend(rec.finish());
        }
    }

    /// The media timestamp reached, ms.
    fn media_ms(&self) -> u32 {
        match self {
            Writer::Flv(flv) => flv.0.last_timestamp(),
            Writer::Mp4(rec) => (rec.written_us / 1000).clamp(0, i64::from(u32::MAX)) as u32,
            Writer::Ts(_, span, _) => {
                span.map_or(0, |(a, b)| ((b - a) / 1000 + 1).clamp(0, i64::from(u32::MAX)) as u32)
            }
        }
    }
}

/// One open file of a recording.
struct OpenFile {
    file: tokio::fs::File,
    path: PathBuf,
    counter: u64,
    writer: Writer,
    bytes: u64,
    /// Stream time (µs) of its first frame.
    first_us: Option<i64>,
    last_us: i64,
}

/// Opens file number `counter` of the recording `f` (inside the root; its
/// folders are made; an existing file is never overwritten).
async fn open_file(root: &Path, f: &target::FileTarget, counter: u64, selected: bool) -> Result<OpenFile, String> {
    let path = f.path_for(counter);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The path was checked by its text; a link inside the root must
        // not lead out of it either.
        let (real_dir, real_root) = (tokio::fs::canonicalize(dir).await, tokio::fs::canonicalize(root).await);
        match (real_dir, real_root) {
            (Ok(d), Ok(r)) if d.starts_with(&r) => {}
            _ => return Err(format!("{} is outside the recording directory", path.display())),
        }
    }
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(OpenFile {
        file,
        path,
        counter,
        writer: Writer::new(f.container, selected, f.faststart),
        bytes: 0,
        first_us: None,
        last_us: 0,
    })
}

impl OpenFile {
    async fn write(&mut self, out: &mut Vec<Bytes>, push: &Push) -> Result<(), String> {
        let mut wrote = 0;
        for b in out.drain(..) {
            self.file.write_all(&b).await.map_err(|e| format!("writing {}: {e}", self.path.display()))?;
            wrote += b.len() as u64;
        }
        self.bytes += wrote;
        push.set(|i| i.bytes += wrote);
        Ok(())
    }

    /// Writes what the writer still holds and closes the file.
    async fn close(mut self, push: &Push) -> Result<OpenFile, String> {
        let mut out = Vec::new();
        self.writer.finish(&mut out);
        self.write(&mut out, push).await?;
        self.file.flush().await.map_err(|e| format!("closing {}: {e}", self.path.display()))?;
        self.file.sync_all().await.map_err(|e| format!("closing {}: {e}", self.path.display()))?;
        Ok(self)
    }
}

/// A closed file, on its way through the finisher.
struct Done {
    path: PathBuf,
    counter: u64,
    bytes: u64,
    first_us: Option<i64>,
    /// Where it ends, stream time (µs).
    end_us: i64,
    /// Its MP4 recorder, when a faststart rewrite is due.
    mp4: Option<mp4::Mp4Recorder>,
    /// The stream ended with it.
    last: bool,
}

impl OpenFile {
    fn done(self, end_us: i64, last: bool, faststart: bool) -> Done {
        let mp4 = match self.writer {
            Writer::Mp4(rec) if faststart => Some(rec),
            _ => None,
        };
        Done { path: self.path, counter: self.counter, bytes: self.bytes, first_us: self.first_us, end_us, mp4, last }
    }
}

/// What happens to each finished file, one file after the other and off
/// the recording's own loop (so a long rewrite never holds the next file
/// back): the faststart rewrite, `RECORDING_SEGMENT`, the S3 upload, and
/// the retention and HLS playlist.
struct Finisher {
    push: Arc<Push>,
    stream: String,
    f: target::FileTarget,
    hooks: Arc<dyn PushHooks>,
    store: Option<Arc<dyn object_store::ObjectStore>>,
    uploads: tokio::task::JoinSet<()>,
    kept: Kept,
}

impl Finisher {
    async fn run(mut self, mut files: tokio::sync::mpsc::Receiver<Done>) -> Result<(), String> {
        while let Some(mut done) = files.recv().await {
            if let Some(rec) = done.mp4.take() {
                if rec.index_dropped {
                    let p = done.path.display();
                    self.push.log(format!("{p}: too long to rewrite with its index in front; left fragmented"));
                }
                match faststart(&done.path, rec).await {
                    Ok(Some(size)) => done.bytes = size,
                    Ok(None) => {}
                    // The fragmented file is whole and stays; say why.
                    Err(e) => {
                        warn!(error = %e, "faststart rewrite failed");
                        self.push.log(e.clone());
                        self.push.set(|i| i.last_error = Some(e));
                    }
                }
            }
            if self.f.split.is_some() {
                report_segment(&self.push, &self.stream, &self.f, &done, &*self.hooks);
            }
            if let (Some(store), Some(dest)) = (self.store.clone(), self.f.upload.as_ref()) {
                let (path, key, push) = (done.path.clone(), dest.key_for(done.counter), self.push.clone());
                self.uploads.spawn(async move {
                    match s3::upload(&*store, &path, &key).await {
                        Ok(_) => push.set(|i| i.uploads += 1),
                        Err(e) => {
                            warn!(error = %e, "recording upload failed");
                            push.log(e.clone());
                            push.set(|i| i.last_error = Some(e));
                        }
                    }
                });
            }
            self.kept.finished(&self.f, &done, &self.push).await?;
        }
        while self.uploads.join_next().await.is_some() {}
        Ok(())
    }
}

/// Rewrites the fragmented MP4 at `path` with its index in front (from
/// what `rec` indexed): into a new file beside it, synced, then renamed
/// over it, so a crash at any point leaves one whole file. Returns the new
/// size; `None` when there was nothing to rewrite.
async fn faststart(path: &Path, rec: mp4::Mp4Recorder) -> Result<Option<u64>, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let layout = match rec.progressive() {
            None => return Ok(None),
            Some(Ok(l)) => l,
            Some(Err(e)) => return Err(format!("{}: no faststart index: {e}", path.display())),
        };
        drop(rec);
        let fail = |what: &str, e: std::io::Error| format!("faststart rewrite of {}: {what}: {e}", path.display());
        let src = std::fs::File::open(&path).map_err(|e| fail("opening", e))?;
        let mut tmp_name = path.clone().into_os_string();
        tmp_name.push(".faststart");
        let tmp = PathBuf::from(tmp_name);
        let file =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| fail("creating", e))?;
        let result = (|| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            out.write_all(&layout.head).map_err(|e| fail("writing", e))?;
            let mut buf = Vec::new();
            for &(offset, size) in &layout.ranges {
                buf.resize(size as usize, 0);
                src.read_exact_at(&mut buf, offset).map_err(|e| fail("reading", e))?;
                out.write_all(&buf).map_err(|e| fail("writing", e))?;
            }
            let file = out.into_inner().map_err(|e| fail("writing", e.into_error()))?;
            file.sync_all().map_err(|e| fail("syncing", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| fail("renaming", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| Some(layout.size))
    })
    .await
    .map_err(|e| format!("faststart rewrite: {e}"))?
}

/// Records the stream into the file `f` names, or, with `split`, into a
/// new file at the first keyframe after each `split` seconds of media.
pub(super) async fn record(
    push: &Arc<Push>,
    stream: &Arc<Stream>,
    f: &target::FileTarget,
    sel: super::select::Selection,
    deps: &Deps,
) -> Attempt {
    let root = deps.root.as_path();
    let store = match &f.upload {
        Some(dest) => match deps.s3.for_bucket(&dest.bucket) {
            Ok(s) => Some(s),
            Err(e) => return Attempt::Fatal(e),
        },
        None => None,
    };
    // Finished files go to the finisher; a few may wait for it (a long
    // faststart rewrite) before the recording itself waits.
    let (finished, files) = tokio::sync::mpsc::channel(8);
    let finisher = Finisher {
        push: push.clone(),
        stream: stream.name().to_owned(),
        f: f.clone(),
        hooks: deps.hooks.clone(),
        store,
        uploads: tokio::task::JoinSet::new(),
        kept: Kept::default(),
    };
    let finisher = tokio::spawn(finisher.run(files));
    let attempt = write_files(push, stream, f, sel, root, &finished).await;
    drop(finished);
    let finished = match finisher.await {
        Ok(r) => r,
        Err(e) => Err(format!("finishing the recording: {e}")),
    };
    match (attempt, finished) {
        (Attempt::Done, Err(e)) => Attempt::Fatal(e),
        (a, _) => a,
    }
}

/// The recording's own loop: frames into files, each finished file handed
/// to the finisher.
async fn write_files(
    push: &Arc<Push>,
    stream: &Arc<Stream>,
    f: &target::FileTarget,
    sel: super::select::Selection,
    root: &Path,
    finished: &tokio::sync::mpsc::Sender<Done>,
) -> Attempt {
    let mut current = match open_file(root, f, 0, !sel.is_any()).await {
        Ok(o) => o,
        Err(e) => return Attempt::Fatal(e),
    };
    push.set(|i| i.state = PushState::Live);
    let split_us = f.split.map(|s| i64::from(s) * 1_000_000);
    let mut sub = sel.subscribe(stream);
    // What a fresh file's writer must see first.
    let mut tracks: Option<Arc<[tidecast_media::Track]>> = None;
    let mut out = Vec::new();
    loop {
        let more = tokio::select! {
            ev = sub.recv() => ev,
            _ = push.cancel.cancelled() => None,
        };
        let Some(first) = more else { break };
        let mut batch = vec![first];
        while let Some(ev) = sub.try_recv() {
            batch.push(ev);
        }
        for ev in batch {
            if let tidecast_media::Event::Tracks(t) = &ev {
                tracks = Some(t.clone());
            }
            if let (tidecast_media::Event::Frame(fr), Some(split)) = (&ev, split_us) {
                let video = tracks.as_ref().and_then(|t| t.iter().find(|t| t.id == fr.track)).map(|t| t.kind());
                let has_video =
                    tracks.as_ref().is_some_and(|t| t.iter().any(|t| t.kind() == tidecast_media::MediaKind::Video));
                let boundary = match video {
                    Some(tidecast_media::MediaKind::Video) => fr.keyframe,
                    Some(tidecast_media::MediaKind::Audio) => !has_video,
                    None => false,
                };
                if boundary && current.first_us.is_some_and(|t0| fr.dts - t0 >= split) {
                    if let Err(e) = current.write(&mut out, push).await {
                        return Attempt::Fatal(e);
                    }
                    let done = match current.close(push).await {
                        Ok(d) => d.done(fr.dts, false, f.faststart),
                        Err(e) => return Attempt::Fatal(e),
                    };
                    let next = done.counter + 1;
                    if finished.send(done).await.is_err() {
                        return Attempt::Fatal("the recording's finisher stopped".into());
                    }
                    current = match open_file(root, f, next, !sel.is_any()).await {
                        Ok(o) => o,
                        Err(e) => return Attempt::Fatal(e),
                    };
                    if let Some(t) = &tracks {
                        current.writer.event(tidecast_media::Event::Tracks(t.clone()), &mut out);
                    }
                }
            }
            if let tidecast_media::Event::Frame(fr) = &ev {
                current.first_us.get_or_insert(fr.dts);
                current.last_us = current.last_us.max(fr.dts);
            }
            current.writer.event(ev, &mut out);
        }
        if current.writer.media_ms() > 0 {
            push.sent_at(current.writer.media_ms());
        }
        if let Err(e) = current.write(&mut out, push).await {
            return Attempt::Fatal(e);
        }
        push.set(|i| i.frames_skipped = sub.skips());
    }
    match current.close(push).await {
        Ok(done) => {
            // The last frame lasts about as long as the one before: count
            // one frame's worth past it (a 25 fps guess when unknown).
            let end = done.last_us + 40_000;
            if finished.send(done.done(end, true, f.faststart)).await.is_err() {
                return Attempt::Fatal("the recording's finisher stopped".into());
            }
            Attempt::Done
        }
        Err(e) => Attempt::Fatal(e),
    }
}

/// One finished file of a split recording.
struct Finished {
    path: PathBuf,
    /// Its name, as the playlist lists it.
    name: String,
    secs: f64,
    /// Where it ends, stream time (µs).
    end_us: i64,
}

/// The finished files a split recording keeps, oldest first, and how many
/// it let go (the HLS playlist's media sequence).
#[derive(Default)]
struct Kept {
    files: std::collections::VecDeque<Finished>,
    dropped: u64,
    /// Files that left the playlist, deleted once no player that loaded an
    /// older playlist can still ask for them (RFC 8216 section 6.2.2: the
    /// segment's duration plus the playlist's), with when they left.
    leaving: std::collections::VecDeque<(Finished, i64)>,
    /// The longest file so far, whole seconds: `EXT-X-TARGETDURATION`,
    /// which must not change between reloads.
    target: u64,
}

impl Kept {
    /// Adds a finished file, lets go of what the retention says (deleting
    /// it unless `nounlink`), and for HLS on disk rewrites the playlist (a
    /// new file renamed over the old, so a reader never sees half of one);
    /// `last`: the stream ended, the playlist gets its end.
    async fn finished(&mut self, f: &target::FileTarget, done: &Done, push: &Push) -> Result<(), String> {
        let (end_us, last) = (done.end_us, done.last);
        if let Some(first) = done.first_us {
            let name = done.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let secs = (end_us - first).max(0) as f64 / 1e6;
            self.target = self.target.max(secs.ceil() as u64);
            self.files.push_back(Finished { path: done.path.clone(), name, secs, end_us });
        } else if !last {
            // A file without a frame: nothing to list or keep.
            let _ = tokio::fs::remove_file(&done.path).await;
        }
        let r = f.retention;
        let newest = self.files.back().map_or(end_us, |n| n.end_us);
        while let Some(old) = self.files.front() {
            let too_many = r.max_entries.is_some_and(|m| self.files.len() > m as usize);
            let too_old = r.target_age.is_some_and(|a| newest - old.end_us > i64::from(a) * 1_000_000);
            if !too_many && !too_old {
                break;
            }
            let Some(old) = self.files.pop_front() else { break };
            self.dropped += 1;
            if !r.keep_files {
                self.leaving.push_back((old, newest));
            }
        }
        // Gone for good: what left more than its own duration plus the
        // playlist's ago (everything, once the stream ended).
        let listed_us = (self.files.iter().map(|s| s.secs).sum::<f64>() * 1e6) as i64;
        while let Some((old, left_at)) = self.leaving.front() {
            let grace = listed_us + (old.secs * 1e6) as i64;
            if !last && newest - left_at < grace {
                break;
            }
            if let Some((old, _)) = self.leaving.pop_front() {
                if let Err(e) = tokio::fs::remove_file(&old.path).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        push.log(format!("removing {}: {e}", old.path.display()));
                    }
                }
            }
        }
        let Some(playlist) = &f.playlist else { return Ok(()) };
        let text = hls_playlist(&self.files, self.dropped, self.target, r.is_set(), last);
        let tmp = playlist.with_extension("m3u8.tmp");
        tokio::fs::write(&tmp, text).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, playlist).await.map_err(|e| format!("writing {}: {e}", playlist.display()))
    }
}

/// The playlist of HLS on disk: an EVENT playlist while recording, VOD
/// with `#EXT-X-ENDLIST` at the end; with a retention (`sliding`), a live
/// window whose media sequence counts the segments let go, ended with
/// `#EXT-X-ENDLIST` alone.
fn hls_playlist(
    segments: &std::collections::VecDeque<Finished>,
    sequence: u64,
    target: u64,
    sliding: bool,
    ended: bool,
) -> String {
    let target = segments.iter().map(|s| s.secs.ceil() as u64).max().unwrap_or(1).max(target).max(1);
    let mut t = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    if !sliding {
        t.push_str(if ended { "#EXT-X-PLAYLIST-TYPE:VOD\n" } else { "#EXT-X-PLAYLIST-TYPE:EVENT\n" });
    }
    t.push_str(&format!("#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n"));
    for s in segments {
        t.push_str(&format!("#EXTINF:{:.3},\n{}\n", s.secs, s.name));
    }
    if ended {
        t.push_str("#EXT-X-ENDLIST\n");
    }
    t
}

/// A split recording's file is done: `RECORDING_SEGMENT`.
fn report_segment(push: &Push, stream: &str, f: &target::FileTarget, done: &Done, hooks: &dyn PushHooks) {
    let ms = |us: i64| (us / 1000).max(0) as u64;
    let closed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    hooks.segment(&SegmentReport {
        push_id: push.info.lock().id,
        stream: stream.to_owned(),
        path: done.path.clone(),
        counter: done.counter,
        container: f.container.as_str(),
        start_ms: ms(done.first_us.unwrap_or(0)),
        end_ms: ms(done.end_us),
        bytes: done.bytes,
        closed_unix_ms: closed,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hls_playlist_is_an_event_while_recording_and_vod_at_the_end() {
        let segs = finished(&[("x-0.ts", 6.04), ("x-1.ts", 5.96)]);
        let live = hls_playlist(&segs, 0, 0, false, false);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:7\n"), "{live}");
        assert!(live.contains("#EXTINF:6.040,\nx-0.ts\n#EXTINF:5.960,\nx-1.ts\n") && !live.contains("ENDLIST"));
        let done = hls_playlist(&segs, 0, 0, false, true);
        assert!(done.contains("#EXT-X-PLAYLIST-TYPE:VOD") && done.ends_with("#EXT-X-ENDLIST\n"), "{done}");
    }

    fn finished(list: &[(&str, f64)]) -> std::collections::VecDeque<Finished> {
        let one = |&(name, secs): &(&str, f64)| Finished { path: name.into(), name: name.into(), secs, end_us: 0 };
        list.iter().map(one).collect()
    }

    #[test]
    fn a_retained_window_slides() {
        let segs = finished(&[("x-7.ts", 2.0), ("x-8.ts", 2.0)]);
        let live = hls_playlist(&segs, 7, 3, true, false);
        assert!(!live.contains("PLAYLIST-TYPE"), "segments leave it: neither EVENT nor VOD: {live}");
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\nx-7.ts\n"), "{live}");
        assert!(live.contains("#EXT-X-TARGETDURATION:3\n"), "the longest segment ever, not the window's: {live}");
        let done = hls_playlist(&segs, 7, 3, true, true);
        assert!(!done.contains("PLAYLIST-TYPE") && done.ends_with("#EXT-X-ENDLIST\n"), "{done}");
    }
}
