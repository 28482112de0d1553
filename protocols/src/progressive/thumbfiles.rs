//! The thumbnail process, as MistServer's FrameWorks fork runs it
//! (`MistProcThumbs`): for every live stream that asks for it, the poster
//! (newest keyframe), the sprite sheet and its WebVTT index are written to
//! files every few seconds, and `THUMBNAIL_UPDATED` is raised with their
//! paths, so that a sidecar (FrameWorks' Helmsman) can upload them.
//!
//! A stream asks for it when someone listens: the binary hands in a
//! predicate (a `THUMBNAIL_UPDATED` handler in the stream's scope). The
//! sheets are the ones `/{stream}.thumbvtt` serves ([`Sprites`]), so a
//! sheet made for the files is not made again for a viewer and the other
//! way round. Files are written under `ROOT/{stream}/` as `poster.jpg`,
//! `sprite.jpg` and `sprite.vtt` (cues point at `sprite.jpg`, relative),
//! each to a temporary name first and renamed over the old one, so a
//! reader never sees half a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidecast_media::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::jpg::Thumbnails;
use super::sprite::{Sheet, Sprites, REGENERATE, TILE};
use crate::access::valid_stream_name;
use crate::hls::HlsHub;

/// Whether a stream's thumbnails are wanted on disk.
pub type Wants = Arc<dyn Fn(&str) -> bool + Send + Sync>;
/// Told when a stream's files were written: the stream and the poster,
/// sprite and VTT paths.
pub type Updated = Arc<dyn Fn(&str, &[PathBuf; 3]) + Send + Sync>;

/// The node's thumbnail process.
pub struct ThumbFiles {
    /// Where streams' folders go.
    pub root: PathBuf,
    /// Sheets, shared with `/{stream}.thumbvtt`.
    pub sprites: Arc<Sprites>,
    /// Posters, shared with `/{stream}.jpg`.
    pub thumbnails: Arc<Thumbnails>,
    /// Which streams want files.
    pub wants: Wants,
    /// Told after each write.
    pub updated: Updated,
}

impl ThumbFiles {
    /// Writes the files of every stream that wants them, every
    /// [`REGENERATE`] and a second (a sheet is made again once it is older
    /// than [`REGENERATE`]), until `shutdown`.
    pub async fn run(self, registry: Registry, hls: Arc<HlsHub>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REGENERATE + std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The sheet last written per stream, so an unchanged one is not
        // written (or announced) again.
        let mut written: HashMap<String, Arc<Sheet>> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let live: Vec<_> = registry.streams().into_iter().filter(|s| !s.is_ended()).collect();
            written.retain(|name, _| live.iter().any(|s| s.name() == name));
            for stream in live {
                let name = stream.name().to_owned();
                // A plain stream name is safe as one folder name; one that
                // is not (a `/` in it) gets no files.
                if !valid_stream_name(&name) || !(self.wants)(&name) {
                    continue;
                }
                let Some(window) = hls.get(&name) else { continue };
                let sheet = match self.sprites.sheet(&window).await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(stream = %name, error = %e, "no sprite sheet yet");
                        continue;
                    }
                };
                if written.get(&name).is_some_and(|w| Arc::ptr_eq(w, &sheet)) {
                    continue;
                }
                let poster = match self.thumbnails.newest(&stream, Some(TILE.0)).await {
                    Ok(p) => p,
                    Err(e) => {
                        debug!(stream = %name, error = ?e, "no poster yet");
                        continue;
                    }
                };
                let dir = self.root.join(&name);
                let paths = [dir.join("poster.jpg"), dir.join("sprite.jpg"), dir.join("sprite.vtt")];
                let vtt = sheet.vtt("sprite.jpg");
                let files: [(&Path, &[u8]); 3] =
                    [(&paths[0], &poster), (&paths[1], &sheet.jpeg), (&paths[2], vtt.as_bytes())];
                let wrote = tokio::task::spawn_blocking({
                    let files: Vec<(PathBuf, Vec<u8>)> =
                        files.iter().map(|(p, b)| (p.to_path_buf(), b.to_vec())).collect();
                    let dir = dir.clone();
                    move || write_all(&dir, &files)
                })
                .await;
                match wrote {
                    Ok(Ok(())) => {
                        written.insert(name.clone(), sheet);
                        (self.updated)(&name, &paths);
                    }
                    Ok(Err(e)) => warn!(stream = %name, dir = %dir.display(), error = %e, "could not write thumbnails"),
                    Err(e) => warn!(stream = %name, error = %e, "thumbnail writer failed"),
                }
            }
        }
    }
}

/// Writes each file to a temporary name in `dir`, then renames it over
/// the old one.
fn write_all(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, bytes) in files {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_get_a_folder() {
        assert!(valid_stream_name("cam-1.main+x"));
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\\b", "a\0b"] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_replace_the_old_ones_whole() {
        let dir = std::env::temp_dir().join(format!("tidecast-thumbfiles-{}", std::process::id()));
        let path = dir.join("sprite.vtt");
        write_all(&dir, &[(path.clone(), b"one".to_vec())]).unwrap();
        write_all(&dir, &[(path.clone(), b"two".to_vec())]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
