//! A minimal HTTP/1.1 sink on loopback for the benches: reads each request (headers and a
//! `content-length` body) on keep-alive connections and answers `200` with an empty body.
//! Std only, one thread per connection, no runtime: it stands in for the collector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running sink.
pub(crate) struct Sink {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// Requests answered.
    pub(crate) requests: Arc<AtomicU64>,
    /// Body bytes received.
    pub(crate) bytes: Arc<AtomicU64>,
}

/// Starts a sink on 127.0.0.1:0.
pub(crate) fn start() -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let url = format!("http://{}", listener.local_addr().expect("sink addr"));
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (Arc::clone(&requests), Arc::clone(&bytes));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (r, b) = (Arc::clone(&r), Arc::clone(&b));
            std::thread::spawn(move || serve(stream, &r, &b));
        }
    });
    Sink {
        url,
        requests,
        bytes,
    }
}

fn serve(stream: TcpStream, requests: &AtomicU64, bytes: &AtomicU64) {
    let Ok(write) = stream.try_clone() else {
        return;
    };
    let mut write = write;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        let mut len = 0usize;
        // Request line and headers.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        if write
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
