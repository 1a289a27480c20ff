//! `watch_config = true`: reload when the config file changes. Polls the file's identity
//! (device, inode, size, mtime) once a second, following symlinks, so the symlink swap of a
//! Kubernetes ConfigMap volume (`..data` pointing at a new directory) is seen as a change.
//! Polling costs one `stat` a second and needs no inotify limits or platform code.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::reload::Control;
use crate::snapshot::Live;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file.
fn identity(path: &std::path::Path) -> Option<(u64, u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Sends `Control::Reload` each time the running config's file changes while its
/// `watch_config` is on (a reload may turn it on or off), until the receiver is gone.
pub async fn watch(live: Arc<Live>, control: mpsc::Sender<Control>) {
    let path = live.load().config.path.clone();
    let mut last = identity(&path);
    loop {
        tokio::time::sleep(POLL).await;
        let now = identity(&path);
        // A file briefly missing mid-swap is not a change to act on.
        if now.is_some() && now != last {
            last = now;
            if !live.load().config.runtime.watch_config {
                continue;
            }
            tracing::info!(path = %path.display(), "config file changed, reloading");
            if control.send(Control::Reload).await.is_err() {
                return;
            }
        }
    }
}
