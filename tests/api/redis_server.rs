//! A throw-away `redis-server` on a free port, for tests that stop and restart Redis.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::helpers::{eventually_blocking, free_port};

/// A Redis server process owned by one test.
pub struct RedisServer {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// The running process, if started.
    child: Option<Child>,
    /// Directory with a self-signed certificate when the server speaks TLS only.
    tls_dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Picks a free port but does not start Redis yet.
    pub fn reserve() -> Self {
        Self {
            port: free_port(),
            child: None,
            tls_dir: None,
        }
    }

    /// Starts a TLS-only server with a freshly generated self-signed
    /// certificate, like Heroku Key-Value Store's.
    pub fn start_tls() -> Self {
        let mut server = Self::reserve();
        let dir = std::env::temp_dir().join(format!(
            "ecos-redis-tls-{}-{}",
            std::process::id(),
            server.port
        ));
        std::fs::create_dir_all(&dir).expect("tls dir");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=ecos-test-redis",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success(), "openssl could not make a certificate");
        server.tls_dir = Some(dir);
        server.restart();
        server
    }

    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        let mut server = Self::reserve();
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let port = self.port.to_string();
        match &self.tls_dir {
            None => command.args(["--port", &port]),
            // TLS only: the plain port is closed, as on Heroku Key-Value Store.
            Some(dir) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("key.pem")),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        eventually_blocking(
            &format!("redis-server to start on {}", self.port),
            Duration::from_secs(10),
            || {
                // A TLS server is probed for an open port only: the test client
                // has no TLS set up, which is what the code under test is for.
                if self.tls_dir.is_some() {
                    std::net::TcpStream::connect(("127.0.0.1", self.port))
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    redis::Client::open(self.url())
                        .and_then(|client| client.get_connection())
                        .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            },
        );
    }

    /// Kills the server abruptly, as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
