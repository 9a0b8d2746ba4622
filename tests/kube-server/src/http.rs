//! A small HTTP/1.1 server: a thread per connection, kept alive between requests, request bodies by
//! `Content-Length` or chunked. The real API server serves any number of concurrent connections, and a
//! client such as kube-rs opens one per request in flight; so does this one (a fixed pool of threads
//! would starve once every thread waits on an idle kept-alive connection).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request body read (the API server's own limit is 3 MiB).
const MAX_BODY: usize = 16 << 20;

/// A request as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target: path and query.
    pub url: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status code, content type and body.
pub type Response = (u16, &'static str, Vec<u8>);

/// What serves each request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A listening server; stops when dropped.
pub struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `127.0.0.1:port` (0: any free port) and serves every request with `handler`.
    pub fn bind(port: u16, handler: Handler) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || accept(&listener, &stop, &handler))
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections end once their clients close them or the next time they wait.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept(listener: &TcpListener, stop: &Arc<AtomicBool>, handler: &Handler) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (stop, handler) = (stop.clone(), handler.clone());
                std::thread::spawn(move || {
                    let _ = connection(stream, &stop, &handler);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Serves one connection's requests in turn until it closes, asks to, or the server stops.
fn connection(stream: TcpStream, stop: &AtomicBool, handler: &Handler) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // Waiting for a request wakes up now and then to see whether the server stopped.
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        let req = match read_request(&mut reader) {
            Ok(r) => r,
            Err(e) => {
                write_response(
                    &mut writer,
                    &(400, "text/plain", e.to_string().into()),
                    true,
                )?;
                return Ok(());
            }
        };
        let close = req
            .header("Connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let resp = handler(&req);
        write_response(&mut writer, &resp, close)?;
        if close {
            return Ok(());
        }
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    r.by_ref().take(64 << 10).read_until(b'\n', &mut buf)?;
    if !buf.ends_with(b"\n") {
        return Err(bad("a line without its end"));
    }
    let text = String::from_utf8(buf).map_err(|_| bad("a line that is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one request (its line, headers and body).
pub fn read_request(r: &mut impl BufRead) -> io::Result<Request> {
    let first = line(r)?;
    let mut words = first.split(' ');
    let (Some(method), Some(url), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Err(bad(format!("a bad request line: {first:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("unsupported version {version}")));
    }
    let mut req = Request {
        method: method.to_string(),
        url: url.to_string(),
        ..Request::default()
    };
    loop {
        let l = line(r)?;
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("a bad header: {l:?}")))?;
        req.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    if req
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("a bad chunk size: {size_line:?}")))?;
            if size == 0 {
                while !line(r)?.is_empty() {}
                break;
            }
            if req.body.len() + size > MAX_BODY {
                return Err(bad("a body over 16 MiB"));
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])?;
            line(r)?;
        }
    } else if let Some(len) = req.header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("a bad Content-Length: {len:?}")))?;
        if len > MAX_BODY {
            return Err(bad("a body over 16 MiB"));
        }
        req.body.resize(len, 0);
        r.read_exact(&mut req.body)?;
    }
    Ok(req)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes `resp` (closing the connection after it when `close`).
pub fn write_response(w: &mut impl Write, resp: &Response, close: bool) -> io::Result<()> {
    let (code, ctype, body) = resp;
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
        reason(*code),
        body.len()
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_with_either_kind_of_body() {
        let raw = b"POST /api/v1/pods?x=1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}GET /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = io::Cursor::new(&raw[..]);
        let a = read_request(&mut r).unwrap();
        assert_eq!(
            (a.method.as_str(), a.url.as_str()),
            ("POST", "/api/v1/pods?x=1")
        );
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.body, b"{}");
        let b = read_request(&mut r).unwrap();
        assert_eq!(b.body, b"abcde");
        assert!(read_request(&mut r).is_err());
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(read_request(&mut io::Cursor::new(bad)).is_err());
        }
    }

    #[test]
    fn many_kept_alive_connections_are_served_at_once() {
        let handler: Handler =
            Arc::new(|r: &Request| (200, "text/plain", r.url.clone().into_bytes()));
        let server = Listener::bind(0, handler).unwrap();
        // Twenty connections, each kept open after its first answer, then asked again.
        let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = (0..20)
            .map(|_| {
                let s = TcpStream::connect(server.addr()).unwrap();
                let r = BufReader::new(s.try_clone().unwrap());
                (s, r)
            })
            .collect();
        for round in 0..2 {
            for (i, (s, _)) in conns.iter_mut().enumerate() {
                write!(s, "GET /{round}/{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            }
            for (i, (_, r)) in conns.iter_mut().enumerate() {
                assert_eq!(line(r).unwrap(), "HTTP/1.1 200 OK");
                let mut len = 0;
                loop {
                    let l = line(r).unwrap();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("Content-Length: ") {
                        len = v.parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                assert_eq!(body, format!("/{round}/{i}").into_bytes());
            }
        }
    }
}
