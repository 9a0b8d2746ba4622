//! The Qubole API test server (`tests/qubole-server`, started by `localstack/qubole-up`) on a free
//! port, for tests of the Hive connector; stopped on drop (`localstack/qubole-down`).

use std::process::Command;

use super::repo;

/// A running Qubole API test server.
pub struct Qubole {
    /// Its endpoint.
    pub endpoint: String,
    /// The token it accepts.
    pub token: String,
    port: u16,
}

impl Qubole {
    /// Starts one accepting `token`.
    pub fn start(token: &str) -> Qubole {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new("bash")
            .arg(repo().join("localstack/qubole-up"))
            .args(["--port", &port.to_string(), "--token", token])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "localstack/qubole-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(endpoint, format!("http://127.0.0.1:{port}"));
        Qubole {
            endpoint,
            token: token.into(),
            port,
        }
    }

    /// The settings' `qubole` section for it.
    pub fn settings(&self) -> String {
        format!(
            "qubole: {{endpoint: '{}', token: '{}'}}\n",
            self.endpoint, self.token
        )
    }

    /// Changes its settings (`POST /_test/settings`).
    pub fn configure(&self, settings: serde_json::Value) {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
            ])
            .arg(settings.to_string())
            .arg(format!("{}/_test/settings", self.endpoint))
            .output()
            .unwrap();
        assert!(out.status.success(), "Qubole test settings refused");
    }

    /// Its command history, oldest first (Qubole's `GET /api/v1.2/commands`).
    pub fn commands(&self) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "-H", &format!("X-AUTH-TOKEN: {}", self.token)])
            .arg(format!("{}/api/v1.2/commands?per_page=100", self.endpoint))
            .output()
            .unwrap();
        assert!(out.status.success(), "no command history");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut all = v["commands"].as_array().cloned().unwrap_or_default();
        all.reverse();
        all
    }
}

impl Drop for Qubole {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("localstack/qubole-down"))
            .args(["--port", &self.port.to_string()])
            .output();
    }
}
