//! Servers in the benchmark's own process, each on a `127.0.0.1:0` port, served the way
//! `tenancy serve` serves (`tenancy_http::serve`).

use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tenancy::Engine;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running on a task of the current runtime.
pub struct Running {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Serves `app` on a fresh loopback port.
    pub async fn start(app: Router) -> Result<Running> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tenancy_http::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(Running { base, stop, task })
    }

    /// The whole tenancy HTTP API over `engine`, exactly as `tenancy serve` mounts it.
    pub async fn full_stack(engine: Engine) -> Result<Running> {
        let (admin_token, _) = engine.admin_token(None).await?;
        Running::start(tenancy_http::router(tenancy_http::AppState::new(
            engine,
            admin_token,
        )))
        .await
    }

    /// Stops accepting, drains in-flight requests (drop the clients' pooled connections
    /// first), and waits up to 5 s for the server to end.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(joined) => Ok(joined??),
            Err(_) => {
                eprintln!("the server at {} did not stop within 5 s", self.base);
                Ok(())
            }
        }
    }
}
