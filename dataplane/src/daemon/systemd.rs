//! What the daemon tells systemd: that it is ready (`READY=1`, sd_notify's protocol), so
//! that a `Type=notify` unit is started once the socket answers and the networks are
//! restored, and units ordered after it find it serving. Without $NOTIFY_SOCKET (not
//! under systemd) it says nothing.

use std::os::unix::net::UnixDatagram;

use anyhow::{Context, Result};

/// Sends READY=1 to $NOTIFY_SOCKET when it is set.
pub fn notify_ready() -> Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify(&socket.to_string_lossy(), "READY=1"),
        None => Ok(()),
    }
}

/// Sends `message` to the notify socket at `address`: a path, or an abstract name after `@`.
fn notify(address: &str, message: &str) -> Result<()> {
    let sender = UnixDatagram::unbound().context("opening a socket for sd_notify")?;
    let sent = match address.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let to = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sender.send_to_addr(message.as_bytes(), &to)
        }
        None => sender.send_to(message.as_bytes(), address),
    };
    sent.with_context(|| format!("telling systemd {message} on NOTIFY_SOCKET {address}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("dataplane-test-{}", std::process::id());
        let abstract_address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&abstract_address).unwrap();
        notify(&format!("@{name}"), "READY=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify(dir.path().join("none").to_str().unwrap(), "READY=1").is_err());
    }
}
