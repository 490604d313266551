//! TCP connections from a chosen loopback source address (127.0.0.0/8 is all
//! local), so that tests can play several hosts: a flood from 127.0.0.3
//! while SPDK's initiator connects from its default 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;

/// Linux's IP_BIND_ADDRESS_NO_PORT (not in every libc crate release): the
/// source port is picked at connect, per destination, instead of at bind,
/// so thousands of short connections do not run out of ports.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking TCP connection from `src` to 127.0.0.1:`port`.
pub fn connect_from(src: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2); the descriptor is owned by `stream` below
    // from the moment it exists, so every path closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let (from, to) = (sockaddr(src, 0), sockaddr(Ipv4Addr::LOCALHOST, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: setsockopt, bind and connect read the option and addresses
    // we pass, with their sizes, on the socket we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(stream)
}

/// Raises this process's open-file limit to its hard limit (floods hold
/// thousands of sockets).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
