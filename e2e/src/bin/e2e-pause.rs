//! The pod sandbox ("pause") image of the real node: holds the pod's namespaces and does nothing.
//! No registry is reachable, so containerd's sandbox image is this binary, built here. As PID 1 of
//! the pod it exits on SIGTERM/SIGINT (the kernel would otherwise ignore them for PID 1); the
//! runtime stops sandboxes with SIGKILL anyway.

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}
