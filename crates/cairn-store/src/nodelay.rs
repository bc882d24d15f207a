//! `TCP_NODELAY` on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting it (sqlx issues #4335 and #4336: fixed upstream, not released
//! yet). Without it, a statement whose message does not fit in one segment — an audit event
//! that carries a lifecycle decision's 250 policy findings, for one — leaves its last
//! segment waiting for the server's delayed acknowledgement: about 40 ms on Linux, per
//! statement. sqlx offers no hook on its sockets, so after each new connection this looks up
//! the process's TCP sockets whose peer is the database's port and sets the option through a
//! duplicate of the descriptor (`pidfd_getfd` on this process: the duplicate shares the
//! socket, the original is not touched otherwise). Only descriptors that `/proc` shows as
//! sockets are duplicated: closing a duplicate of a file would drop the process's POSIX
//! locks on it. Best effort: where `/proc` or `pidfd_getfd` is not available, nothing
//! changes but latency.
//!
//! Remove when the sqlx in use sets the option itself.

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port`; returns how
/// many it set.
#[cfg(target_os = "linux")]
pub(crate) fn set_on_connections_to(port: u16) -> usize {
    use rustix::net::{SocketAddrAny, SocketType, sockopt};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let Ok(pidfd) = pidfd_open(getpid(), PidfdFlags::empty()) else { return 0 };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    let mut set = 0;
    for entry in dir.flatten() {
        let Some(target) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // Sockets only. Closing a duplicate of a *file* would release every POSIX lock this
        // process holds on it (SQLite's locks among them).
        if !std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        let Ok(fd) = pidfd_getfd(&pidfd, target, PidfdGetfdFlags::empty()) else { continue };
        match sockopt::socket_type(&fd) {
            Ok(SocketType::STREAM) => {}
            Ok(_) => continue,
            // Not a socket after all: the number was closed and reused since it was listed.
            // The duplicate is left open rather than closed, for the reason above.
            Err(_) => {
                std::mem::forget(fd);
                continue;
            }
        }
        let peer = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .and_then(|a: SocketAddrAny| std::net::SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port) && sockopt::set_tcp_nodelay(&fd, true).is_ok() {
            set += 1;
        }
    }
    set
}

/// Elsewhere sqlx's sockets keep the system's default.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_on_connections_to(_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_the_option_on_this_process_sockets_to_the_port_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_port = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_port.nodelay().unwrap() && !to_other.nodelay().unwrap());
        assert!(set_on_connections_to(port) >= 1);
        assert!(to_port.nodelay().unwrap(), "the connection to the port has TCP_NODELAY");
        assert!(!to_other.nodelay().unwrap(), "a connection elsewhere is left alone");
    }
}
