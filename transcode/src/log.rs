//! FFmpeg's log, routed into `tracing` (at debug level; warnings and errors
//! at debug too, since an encoder being probed logs errors by design), and
//! captured per thread while a caller wants the reason of a failure:
//! `avcodec_open2` often answers only "Operation not permitted" while its
//! log says "Cannot load libcuda.so.1".

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use ffmpeg_sys_next as ffi;

thread_local! {
    /// Lines logged on this thread while a capture is running.
    static CAPTURE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns its result with the warnings and errors FFmpeg
/// logged on this thread meanwhile.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let lines = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, lines)
}

/// Installs the callback (once, from [`crate::init`]). Only where the
/// bindings spell `va_list` as a pointer (x86-64); elsewhere FFmpeg keeps
/// logging to stderr and failures carry FFmpeg's error code alone.
pub(crate) fn install() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `callback` has the signature FFmpeg expects and only reads
    // its arguments through FFmpeg's own formatter.
    unsafe {
        ffi::av_log_set_callback(Some(callback))
    };
}

#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: *mut ffi::__va_list_tag) {
    if level > ffi::AV_LOG_VERBOSE as c_int || fmt.is_null() {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut prefix: c_int = 1;
    // SAFETY: FFmpeg formats its own format string and arguments into our
    // buffer, bounded by its length, and NUL-terminates it.
    let text = unsafe {
        ffi::av_log_format_line2(avcl, level, fmt, vl, line.as_mut_ptr(), line.len() as c_int, &mut prefix);
        CStr::from_ptr(line.as_ptr()).to_string_lossy().trim().to_owned()
    };
    if text.is_empty() {
        return;
    }
    tracing::debug!(target: "ffmpeg", level, "{text}");
    if level <= ffi::AV_LOG_WARNING as c_int {
        CAPTURE.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(lines) = c.as_mut().filter(|l| l.len() < 32) {
                    lines.push(text);
                }
            }
        });
    }
}
