//! A TCP bridge between an operator process and the API server that a test can pause: a network
//! partition with data in flight. While paused, whatever either side sends is held by the bridge
//! (the sender's writes complete, as they would into a network that drops nothing); on resume the
//! held bytes are delivered in order. A side that closed meanwhile has its close delivered only
//! after the other side answered what was held (or after 10 s): the worst a network can do, the
//! stale request processed as if its sender were still there.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

/// A pausable TCP bridge to one address.
pub struct Bridge {
    pub port: u16,
    paused: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
}

impl Bridge {
    /// Listens on `127.0.0.1:<port>` and forwards each connection to `target` (`host:port`).
    pub async fn start(target: String) -> Bridge {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (paused, _) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let (tx, h) = (paused.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                // Bytes the server has sent, so a closed client's close waits for an answer.
                let answered = Arc::new(AtomicU64::new(0));
                tokio::spawn(pump(cr, sw, tx.subscribe(), Some(h.clone()), answered.clone(), true));
                tokio::spawn(pump(sr, cw, tx.subscribe(), None, answered, false));
            }
        });
        Bridge { port, paused, held }
    }

    pub fn pause(&self) {
        self.held.store(0, Ordering::SeqCst);
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Bytes the operator sent since the pause, held by the bridge.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// One direction of a connection. `to_server`: the operator's bytes, counted in `held` while
/// paused; `answered` counts the server's bytes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    held: Option<Arc<AtomicUsize>>,
    answered: Arc<AtomicU64>,
    to_server: bool,
) {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut broken = false;
    loop {
        tokio::select! {
            read = from.read(&mut chunk), if !closed => match read {
                Ok(0) | Err(_) => closed = true,
                Ok(n) => {
                    pending.extend_from_slice(&chunk[..n]);
                    if !to_server {
                        answered.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    if let Some(h) = held.as_ref().filter(|_| *paused.borrow()) {
                        h.fetch_add(n, Ordering::SeqCst);
                    }
                }
            },
            changed = paused.changed() => if changed.is_err() { return },
        }
        if !*paused.borrow() && !pending.is_empty() {
            // A peer that went away just loses what it would have received.
            if !broken && to.write_all(&pending).await.is_err() {
                broken = true;
            }
            pending.clear();
        }
        if closed && pending.is_empty() {
            break;
        }
    }
    if to_server {
        // The operator closed: the API server still answers what it received first.
        let before = answered.load(Ordering::SeqCst);
        for _ in 0..100 {
            if answered.load(Ordering::SeqCst) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = to.shutdown().await;
}
