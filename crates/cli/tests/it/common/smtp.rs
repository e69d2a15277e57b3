//! A real SMTP server for the email channel: Python's aiosmtpd (PyPI, in
//! the virtual environment `make test` installs and names in
//! PLANTOPS_TEST_PYTHON), optionally requiring STARTTLS and a login. Each
//! message it takes is printed as a JSON line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SERVER: &str = r#"
import asyncio, json, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, cert, key, user, password = sys.argv[1:6]

class Record:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "login": session.auth_data.login.decode() if session.auth_data else None,
        }), flush=True)
        return "250 Message accepted for delivery"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, auth_data=auth_data)

options = {}
if cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    options = dict(tls_context=context, require_starttls=True,
                   authenticator=authenticate, auth_require_tls=True)
controller = Controller(Record(), hostname="127.0.0.1", port=int(port), **options)
controller.start()
print(json.dumps({"ready": True}), flush=True)
sys.stdin.read()
controller.stop()
"#;

pub struct Smtp {
    pub port: u16,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Where `make test` put aiosmtpd; `None` (with a note) outside it.
pub fn python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("PLANTOPS_TEST_PYTHON").filter(|p| !p.is_empty());
    if python.is_none() {
        eprintln!("PLANTOPS_TEST_PYTHON unset: the SMTP test is not run (make test runs it)");
    }
    python.map(Into::into)
}

impl Smtp {
    /// Plain SMTP, or with `tls` (certificate, key) STARTTLS required and
    /// a login `user`/`password` required after it.
    pub async fn start(
        python: &Path,
        tls: Option<(&Path, &Path)>,
        user: &str,
        password: &str,
    ) -> Smtp {
        let port = plantops_testkit::free_port();
        let (cert, key) = tls
            .map(|(c, k)| (c.display().to_string(), k.display().to_string()))
            .unwrap_or_default();
        let mut child = Command::new(python)
            .args(["-c", SERVER, &port.to_string(), &cert, &key, user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python with aiosmtpd");
        let stdout = child.stdout.take().unwrap();
        let mut smtp = Smtp {
            port,
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let ready = smtp.next_line().await;
        assert_eq!(ready["ready"], true, "aiosmtpd did not start: {ready}");
        smtp
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("aiosmtpd answers within 30 s")
            .expect("aiosmtpd's output")
            .expect("aiosmtpd still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// The next message the server accepted.
    pub async fn next_message(&mut self) -> Value {
        self.next_line().await
    }

    /// Stops the server and returns what it accepted and nobody read.
    pub async fn stop(mut self) -> Vec<Value> {
        drop(self.child.stdin.take());
        let mut rest = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(10), self.lines.next_line()).await
        {
            rest.push(serde_json::from_str(&line).unwrap());
        }
        let _ = self.child.wait().await;
        rest
    }
}
