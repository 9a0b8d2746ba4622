//! `updraft-test-kube [--port P] [--work DIR]`: runs the test Kubernetes API server until interrupted,
//! printing its URL.

fn main() -> std::process::ExitCode {
    let mut port = 0u16;
    let mut work = std::env::temp_dir().join(format!("updraft-test-kube-{}", std::process::id()));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--port", Some(p)) => match p.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("--port: `{p}` is not a port");
                    return std::process::ExitCode::FAILURE;
                }
            },
            ("--work", Some(w)) => work = w.into(),
            _ => {
                eprintln!("usage: updraft-test-kube [--port P] [--work DIR]");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    match updraft_test_kube::Server::start(port, work) {
        Ok(server) => {
            println!("{}", server.url);
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("updraft-test-kube: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
