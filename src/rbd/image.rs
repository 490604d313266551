//! An open RBD image (librbd's `rbd_image_t`): opened by a blocking call
//! meant for a thread of its own, never a reactor, and read and written with
//! librbd's asynchronous calls, whose completions run on librbd's threads.
//! librbd image handles are thread-safe for those calls, so one open image
//! serves every SPDK thread (SPDK 20.07's C module opens it again per
//! channel, on the reactor).

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{mpsc, Arc};

use super::cluster::{c_text, ceph_error, Cluster};
use crate::error::Result;
use crate::sys;

/// An open image of a pool; closed when dropped.
pub struct Image {
    raw: NonNull<c_void>,
    ioctx: NonNull<c_void>,
    size: u64,
    pool: String,
    name: String,
    // Declared last: the image and its pool context close before the
    // connection they use shuts down.
    _cluster: Arc<Cluster>,
}

// SAFETY: librbd's image handle and librados' I/O context may be used from
// any thread at once for the calls Image makes (librbd locks internally);
// Image gives no other access to them.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

/// One asynchronous operation; offsets and lengths in bytes.
pub(crate) enum Op {
    Read(u64),
    Write(u64),
    Discard(u64, u64),
    WriteZeroes(u64, u64),
    Flush,
}

/// What a completion callback gets back: the closure, and the iovecs the
/// operation was given (librbd may read them until it completes).
struct Pending {
    done: Box<dyn FnOnce(isize) + Send>,
    _iov: Vec<libc::iovec>,
}

impl Image {
    /// Opens `pool`/`name` on `cluster`, blocking the calling thread (call
    /// it off the reactors).
    pub fn open(cluster: Arc<Cluster>, pool: &str, name: &str) -> Result<Image> {
        let c_pool = crate::cstr::to_c("RBD pool name", pool)?;
        let c_name = crate::cstr::to_c("RBD image name", name)?;
        let mut ioctx: sys::rados_ioctx_t = std::ptr::null_mut();
        // SAFETY: a connected cluster handle, a C string, an out pointer.
        let rc = unsafe { sys::rados_ioctx_create(cluster.as_ptr(), c_pool.as_ptr(), &mut ioctx) };
        let Some(ioctx) = NonNull::new(ioctx).filter(|_| rc == 0) else {
            let hint = if -rc == libc::ENOENT {
                "the cluster has no pool of that name: see `ceph osd pool ls`"
            } else {
                ""
            };
            return Err(ceph_error(format!("opening RBD pool {pool}"), rc, hint));
        };
        let mut raw: sys::rbd_image_t = std::ptr::null_mut();
        // SAFETY: a live I/O context, a C string, an out pointer; NULL: the
        // image itself, not a snapshot.
        let rc =
            unsafe { sys::rbd_open(ioctx.as_ptr(), c_name.as_ptr(), &mut raw, std::ptr::null()) };
        let Some(raw) = NonNull::new(raw).filter(|_| rc == 0) else {
            // SAFETY: the context is ours and nothing else uses it.
            unsafe { sys::rados_ioctx_destroy(ioctx.as_ptr()) };
            let hint = if -rc == libc::ENOENT {
                format!("pool {pool} has no image of that name: see `rbd ls {pool}`")
            } else {
                String::new()
            };
            return Err(ceph_error(
                format!("opening RBD image {pool}/{name}"),
                rc,
                &hint,
            ));
        };
        let mut image = Image {
            raw,
            ioctx,
            size: 0,
            pool: pool.into(),
            name: name.into(),
            _cluster: cluster,
        };
        // SAFETY: an open image; fills `size`.
        let rc = unsafe { sys::rbd_get_size(image.raw.as_ptr(), &mut image.size) };
        if rc < 0 {
            return Err(ceph_error(
                format!("reading the size of {pool}/{name}"),
                rc,
                "",
            ));
        }
        Ok(image)
    }

    /// Its size in bytes, when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its pool.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Its name in the pool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts `op` over the buffers `iov` (reads and writes); `done` gets
    /// librbd's result (bytes, or `-errno`) on a librbd thread, exactly once,
    /// unless this returns an error.
    ///
    /// # Safety
    /// Each iovec must describe memory that stays valid, and that nothing
    /// else reads (for reads) or writes (for writes), until `done` runs.
    pub(crate) unsafe fn start(
        &self,
        op: Op,
        iov: Vec<libc::iovec>,
        done: Box<dyn FnOnce(isize) + Send>,
    ) -> Result<()> {
        let (iov_ptr, iov_count) = (iov.as_ptr() as *const sys::iovec, iov.len() as i32);
        let pending = Box::into_raw(Box::new(Pending { done, _iov: iov }));
        let mut comp: sys::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `pending` is handed to the callback, which frees it.
        let rc = unsafe {
            sys::rbd_aio_create_completion(pending as *mut c_void, Some(aio_complete), &mut comp)
        };
        if rc < 0 {
            // SAFETY: no completion was created: `pending` is still ours.
            drop(unsafe { Box::from_raw(pending) });
            return Err(ceph_error("creating an RBD completion".into(), rc, ""));
        }
        let image = self.raw.as_ptr();
        // SAFETY: an open image and a fresh completion; the iovecs live in
        // `pending` until the callback, and the caller keeps their memory.
        let rc = unsafe {
            match op {
                Op::Read(offset) => sys::rbd_aio_readv(image, iov_ptr, iov_count, offset, comp),
                Op::Write(offset) => sys::rbd_aio_writev(image, iov_ptr, iov_count, offset, comp),
                Op::Discard(offset, len) => sys::rbd_aio_discard(image, offset, len, comp),
                Op::WriteZeroes(offset, len) => {
                    sys::rbd_aio_write_zeroes(image, offset, len as usize, comp, 0, 0)
                }
                Op::Flush => sys::rbd_aio_flush(image, comp),
            }
        };
        if rc < 0 {
            // SAFETY: librbd refused the operation: the callback never runs,
            // so the completion and `pending` are ours to free.
            unsafe {
                sys::rbd_aio_release(comp);
                drop(Box::from_raw(pending));
            }
            return Err(ceph_error(
                format!("starting I/O on RBD image {}/{}", self.pool, self.name),
                rc,
                "",
            ));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`, waiting for them: for tools and
    /// tests, never a reactor.
    pub fn read_blocking(&self, offset: u64, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let iov = vec![libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut c_void,
            iov_len: buf.len(),
        }];
        // SAFETY: `buf` is not touched until the completion is received.
        self.wait(|done| unsafe { self.start(Op::Read(offset), iov, done) })?;
        Ok(buf)
    }

    /// Writes `data` at `offset`, waiting for it: for tools and tests.
    pub fn write_blocking(&self, offset: u64, data: &[u8]) -> Result<()> {
        let iov = vec![libc::iovec {
            iov_base: data.as_ptr() as *mut c_void,
            iov_len: data.len(),
        }];
        // SAFETY: `data` is borrowed, unchanged, until the completion is
        // received.
        self.wait(|done| unsafe { self.start(Op::Write(offset), iov, done) })
    }

    /// Zeroes `len` bytes at `offset`, waiting: for tools and tests.
    pub fn write_zeroes_blocking(&self, offset: u64, len: u64) -> Result<()> {
        // SAFETY: no buffers.
        self.wait(|done| unsafe { self.start(Op::WriteZeroes(offset, len), vec![], done) })
    }

    /// Discards `len` bytes at `offset` (they read back as zeroes), waiting.
    pub fn discard_blocking(&self, offset: u64, len: u64) -> Result<()> {
        // SAFETY: no buffers.
        self.wait(|done| unsafe { self.start(Op::Discard(offset, len), vec![], done) })
    }

    /// Waits until every write before it is in the cluster.
    pub fn flush_blocking(&self) -> Result<()> {
        // SAFETY: no buffers.
        self.wait(|done| unsafe { self.start(Op::Flush, vec![], done) })
    }

    fn wait(&self, start: impl FnOnce(Box<dyn FnOnce(isize) + Send>) -> Result<()>) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        start(Box::new(move |rc| {
            let _ = tx.send(rc);
        }))?;
        // The sender lives in the callback, which librbd always calls.
        let rc = rx.recv().unwrap_or(-(libc::EIO as isize));
        if rc < 0 {
            return Err(ceph_error(
                format!("I/O on RBD image {}/{}", self.pool, self.name),
                rc as i32,
                "",
            ));
        }
        Ok(())
    }
}

/// What the image is, for those that must not mistake it for another.
impl Image {
    /// What tells it from every other image, also one of the same name
    /// made after this one was removed, or on another cluster: `rbd
    /// POOL/NAME (cluster FSID, image id ID)` (without the id for an image
    /// of the old format 1, which has none).
    pub fn identity(&self) -> Result<String> {
        let fsid = self._cluster.fsid()?;
        let mut id = [0u8; 128];
        // SAFETY: an open image and a buffer of the length given.
        let rc = unsafe { sys::rbd_get_id(self.raw.as_ptr(), id.as_mut_ptr().cast(), id.len()) };
        let (pool, name) = (&self.pool, &self.name);
        Ok(if rc < 0 {
            format!("rbd {pool}/{name} (cluster {fsid})")
        } else {
            format!(
                "rbd {pool}/{name} (cluster {fsid}, image id {})",
                c_text(&id)
            )
        })
    }
}

extern "C" fn aio_complete(comp: sys::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Pending that Image::start leaked for this
    // completion, and librbd calls this once per completion.
    let pending = unsafe { Box::from_raw(arg as *mut Pending) };
    // SAFETY: the completion is complete (this is its callback); released
    // once, here.
    let rc = unsafe {
        let rc = sys::rbd_aio_get_return_value(comp);
        sys::rbd_aio_release(comp);
        rc
    };
    // No panic may unwind into librbd's thread.
    let done = pending.done;
    crate::panics::contain(
        || "an RBD completion".to_string(),
        move || done(rc as isize),
    );
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the image and context are open and nothing uses them any
        // more (every operation holds the Image until its completion: the
        // bdev waits for in-flight I/O before it drops it).
        unsafe {
            sys::rbd_close(self.raw.as_ptr());
            sys::rados_ioctx_destroy(self.ioctx.as_ptr());
        }
    }
}
