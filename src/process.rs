//! What the process asks of the operating system before it serves: the tokio runtime and
//! the open-file limit.

use crate::config;

/// The runtime `[runtime] worker_threads` asks for. One worker gets the current-thread
/// scheduler: it does the same work without the cross-thread handoffs of the multi-thread
/// one (the sidecar and benchmark setting).
pub fn runtime(settings: &config::Runtime) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match settings.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build()
}

/// Raises the soft open-file limit to the hard one. Every client and backend connection is a
/// descriptor, and the usual soft default (1024) caps a proxy long before memory does; HAProxy
/// raises it by itself, nginx has `worker_rlimit_nofile` for it.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("cannot raise the open-file limit");
            }
        }
    }
}
