//! `--floor`: what the kernel alone charges for the same traffic, with no
//! Socket.IO server at all.
//!
//! A writer thread (pinned with `--floor-cpu`, where a server would run)
//! holds the server side of N loopback TCP connections and, for every
//! broadcast, writes one ready-made WebSocket frame of the same shape as a
//! server's `message` event to each of them, one `write` per connection, as
//! any server must. The clients read them with the same code as against a
//! real server. The writer's CPU time per write and the latency the clients
//! see are then the least a server on this machine could do: everything a
//! real server costs beyond it is its own.

use std::io::Write as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use crate::wire::Ws;
use crate::{SHARDS, Shared, message_args, now_ns, on_frames};

/// What the floor's writer measured.
pub struct Floor {
    /// The writer thread's CPU time (user + system) while writing, in seconds.
    pub writer_cpu_secs: f64,
}

/// CPU time (user + system) of the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: the set is zeroed, filled with one valid CPU index and passed by pointer with its size.
    let status = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if status != 0 {
        anyhow::bail!(
            "cannot pin the floor writer to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// An unmasked server-to-client text frame (payloads here are under 64 KiB).
fn server_frame(payload: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// The server side of the floor's connections, once the clients are reading.
pub struct Conns(Vec<std::net::TcpStream>);

/// Opens `clients` loopback connections and starts a reading task for each,
/// which records what it reads into `shared` as the generator's clients do.
pub async fn connect(clients: usize, shared: &Arc<Shared>) -> anyhow::Result<Conns> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind the floor listener")?;
    let addr = listener.local_addr()?;
    let mut servers = Vec::with_capacity(clients);
    for idx in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .context("connect to the floor listener")?;
        stream.set_nodelay(true)?;
        // The connect has completed, so the accept does not block.
        let (server, _) = listener.accept().context("accept a floor connection")?;
        server.set_nodelay(true)?;
        servers.push(server);
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut ws = Ws::from_stream(stream);
            while matches!(on_frames(&mut ws, &shared, idx % SHARDS, None), Ok(true)) {
                match ws.fill().await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        });
    }
    shared.welcomed.store(clients, Ordering::Relaxed);
    shared.last_welcome_ns.store(now_ns(), Ordering::Relaxed);
    Ok(Conns(servers))
}

/// Writes `count` broadcasts at `rate` per second (0: back to back) to every
/// connection, from a thread pinned to `cpu`; resolves with the writer's figures.
pub fn write(
    conns: Conns,
    rate: f64,
    count: u64,
    padding: Arc<str>,
    cpu: Option<usize>,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<anyhow::Result<Floor>> {
    std::thread::spawn(move || {
        let Conns(mut servers) = conns;
        if let Some(cpu) = cpu {
            pin_to(cpu)?;
        }
        let cpu0 = thread_cpu_secs();
        let started = now_ns();
        for seq in 0..count {
            // Open loop, like the generator's ticker: a late broadcast is
            // written at once but stamped with its due time, so time lost
            // behind earlier broadcasts counts as latency, as it does for a
            // server that falls behind.
            let stamp = if rate > 0.0 {
                let due = started + (seq as f64 * 1e9 / rate) as u64;
                if let Some(wait) = due.checked_sub(now_ns()) {
                    std::thread::sleep(Duration::from_nanos(wait));
                }
                due
            } else {
                now_ns()
            };
            // What a server broadcasts to the others: the event without an ack id.
            let frame = server_frame(&format!("42{}", message_args(stamp, seq, &padding)));
            for server in servers.iter_mut() {
                server.write_all(&frame).context("floor write")?;
            }
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        let floor = Floor {
            writer_cpu_secs: thread_cpu_secs() - cpu0,
        };
        // The connections stay open while the readers drain them; the process
        // exits once the run is reported.
        std::mem::forget(servers);
        Ok(floor)
    })
}
