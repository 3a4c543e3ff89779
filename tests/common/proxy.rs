//! A TCP front whose backend can be switched, as a virtual address moves to a promoted
//! replica in a failover. Switching drops every connection made to the old backend.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct SwitchableFront {
    pub port: u16,
    backend: Arc<Mutex<u16>>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl SwitchableFront {
    pub async fn start(backend: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = Arc::new(Mutex::new(backend));
        let (generation, watcher) = watch::channel(0u64);
        let target = backend.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = *target.lock().unwrap();
                let mut changed = watcher.clone();
                changed.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            backend,
            generation,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// New connections go to `backend`; the open ones are cut.
    pub fn switch_to(&self, backend: u16) {
        *self.backend.lock().unwrap() = backend;
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for SwitchableFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
