//! Device surfaces for encoders that read only those (VAAPI): a device, a
//! pool of NV12 surfaces on it sized for one rung, and the upload of each
//! scaled system-memory picture into a surface of the pool.
//!
//! NVENC and QSV take system-memory frames themselves; only `h264_vaapi`
//! goes through here. The device is the render node in
//! `TIDECAST_VAAPI_DEVICE`, else [`DEFAULT_VAAPI_DEVICE`].

use std::ffi::CString;

use ff::ffi;
use ffmpeg_next as ff;

/// The VAAPI render node used when `TIDECAST_VAAPI_DEVICE` is unset.
pub const DEFAULT_VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// Surfaces kept in a rung's pool: the encoder's few references plus the
/// one being filled.
const POOL: i32 = 8;

/// A pool of device surfaces; holds one reference to FFmpeg's frames
/// context (which holds the device).
pub struct HwFrames {
    frames: *mut ffi::AVBufferRef,
}

// SAFETY: the frames context is reference counted with atomic counts and
// FFmpeg allows its surfaces to be taken from any thread; a `HwFrames` is
// used by one rung thread at a time.
unsafe impl Send for HwFrames {}

impl std::fmt::Debug for HwFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwFrames").finish_non_exhaustive()
    }
}

fn ff_err(what: &str, rc: i32) -> String {
    format!("{what}: {}", ff::Error::from(rc))
}

impl HwFrames {
    /// Opens the VAAPI device and a pool of `width` x `height` NV12 surfaces.
    pub fn vaapi(width: u32, height: u32) -> Result<HwFrames, String> {
        let path = std::env::var("TIDECAST_VAAPI_DEVICE").unwrap_or_else(|_| DEFAULT_VAAPI_DEVICE.to_owned());
        HwFrames::vaapi_on(&path, width, height)
    }

    /// As [`HwFrames::vaapi`], on the render node at `path`.
    pub fn vaapi_on(path: &str, width: u32, height: u32) -> Result<HwFrames, String> {
        let device_path = CString::new(path).map_err(|_| format!("bad VAAPI device path {path:?}"))?;
        let (w, h) = (
            i32::try_from(width).map_err(|_| "width out of range")?,
            i32::try_from(height).map_err(|_| "height out of range")?,
        );
        // SAFETY: every pointer passed is either null where FFmpeg allows it
        // or one FFmpeg just returned and checked for null; the frames
        // context is set up before av_hwframe_ctx_init, as documented, and
        // each reference taken here is released exactly once (the device's
        // right after the frames context took its own, the frames context's
        // by `Drop`).
        unsafe {
            let mut device: *mut ffi::AVBufferRef = std::ptr::null_mut();
            let rc = ffi::av_hwdevice_ctx_create(
                &mut device,
                ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
                device_path.as_ptr(),
                std::ptr::null_mut(),
                0,
            );
            if rc < 0 {
                return Err(ff_err(&format!("cannot open the VAAPI device {path}"), rc));
            }
            let frames = ffi::av_hwframe_ctx_alloc(device);
            ffi::av_buffer_unref(&mut device);
            if frames.is_null() {
                return Err("cannot allocate VAAPI surfaces".into());
            }
            let pool = HwFrames { frames };
            let ctx = (*frames).data as *mut ffi::AVHWFramesContext;
            (*ctx).format = ffi::AVPixelFormat::AV_PIX_FMT_VAAPI;
            (*ctx).sw_format = ffi::AVPixelFormat::AV_PIX_FMT_NV12;
            (*ctx).width = w;
            (*ctx).height = h;
            (*ctx).initial_pool_size = POOL;
            let rc = ffi::av_hwframe_ctx_init(pool.frames);
            if rc < 0 {
                return Err(ff_err("cannot set up VAAPI surfaces", rc));
            }
            Ok(pool)
        }
    }

    /// Makes `ctx`, an encoder not opened yet, read surfaces of this pool.
    pub fn attach(&self, ctx: &mut ff::codec::context::Context) -> Result<(), String> {
        // SAFETY: `ctx` is a valid, unopened codec context; it takes
        // ownership of the new reference (freed with the context).
        unsafe {
            let r = ffi::av_buffer_ref(self.frames);
            if r.is_null() {
                return Err("out of memory".into());
            }
            let c = ctx.as_mut_ptr();
            (*c).hw_frames_ctx = r;
            (*c).pix_fmt = ffi::AVPixelFormat::AV_PIX_FMT_VAAPI;
        }
        Ok(())
    }

    /// Copies an NV12 picture into a surface of the pool, with its
    /// timestamps and picture type.
    pub fn upload(&self, picture: &ff::frame::Video) -> Result<ff::frame::Video, String> {
        let mut surface = ff::frame::Video::empty();
        // SAFETY: `surface` is an empty frame FFmpeg fills with a surface
        // of the pool; `picture` is a valid system-memory frame of the
        // pool's size and software format.
        unsafe {
            let rc = ffi::av_hwframe_get_buffer(self.frames, surface.as_mut_ptr(), 0);
            if rc < 0 {
                return Err(ff_err("no free VAAPI surface", rc));
            }
            let rc = ffi::av_hwframe_transfer_data(surface.as_mut_ptr(), picture.as_ptr(), 0);
            if rc < 0 {
                return Err(ff_err("cannot upload a picture to VAAPI", rc));
            }
            let rc = ffi::av_frame_copy_props(surface.as_mut_ptr(), picture.as_ptr());
            if rc < 0 {
                return Err(ff_err("cannot copy a picture's properties", rc));
            }
        }
        Ok(surface)
    }
}

impl Drop for HwFrames {
    fn drop(&mut self) {
        // SAFETY: releases the one reference this value holds.
        unsafe { ffi::av_buffer_unref(&mut self.frames) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_error() {
        crate::init();
        let err = HwFrames::vaapi_on("/nonexistent/renderD999", 256, 144).expect_err("no such device");
        assert!(err.contains("/nonexistent/renderD999"), "{err}");
    }
}
