//! A client that loops on `GET` on its own connection and OS thread, so its latencies show
//! how long Redis was blocked at a time, not how busy the measuring process was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `GET` loop; [`finish`](GetProbe::finish) stops it.
#[derive(Debug)]
pub struct GetProbe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Duration>>,
}

impl GetProbe {
    /// Starts looping on `GET key` against `url`, sleeping `pause` between calls.
    pub fn start(url: &str, key: &str, pause: Duration) -> GetProbe {
        let mut conn = redis::Client::open(url)
            .expect("probe URL")
            .get_connection()
            .expect("probe connection");
        let (stop, key) = (Arc::new(AtomicBool::new(false)), key.to_owned());
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                let _: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query(&mut conn)
                    .expect("probe GET");
                latencies.push(start.elapsed());
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            latencies
        });
        GetProbe { stop, handle }
    }

    /// Stops the loop; every latency it saw, sorted.
    pub fn finish(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.handle.join().expect("probe thread");
        latencies.sort();
        latencies
    }
}
