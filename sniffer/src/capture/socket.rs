//! The `AF_PACKET` raw socket the kernel program is attached to.
//!
//! The socket is opened with protocol 0 (it receives nothing), the filter is attached, and only
//! then is it bound to the interface with `ETH_P_ALL`: no packet ever passes unfiltered. Because
//! the filter returns 0 for every packet, nothing is ever queued on it.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use sniffer_common::LinkLayer;
use thiserror::Error;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_NONE: u16 = 65534;

/// A socket operation failed.
#[derive(Debug, Error)]
pub enum SocketError {
    /// `socket(AF_PACKET, SOCK_RAW)` failed, usually for lack of `CAP_NET_RAW`.
    #[error("cannot open an AF_PACKET socket (needs CAP_NET_RAW)")]
    Open(#[source] io::Error),
    /// Reading the interface's hardware type failed.
    #[error("cannot read the link type of interface {interface:?}")]
    LinkType {
        /// The interface.
        interface: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The link type has no known header layout.
    #[error("interface {interface:?} has link type {arphrd}, which the sniffer cannot parse")]
    UnsupportedLinkType {
        /// The interface.
        interface: String,
        /// Its `ARPHRD_*` type.
        arphrd: u16,
    },
    /// `SO_ATTACH_BPF` failed.
    #[error("cannot attach the socket filter (SO_ATTACH_BPF)")]
    Attach(#[source] io::Error),
    /// `bind` to the interface failed.
    #[error("cannot bind the AF_PACKET socket to interface index {ifindex}")]
    Bind {
        /// The interface index.
        ifindex: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// An unbound `AF_PACKET` socket.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a raw packet socket that receives nothing until [`PacketSocket::bind`].
    pub fn open() -> Result<Self, SocketError> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(SocketError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Asks the kernel about `interface` (`SIOC…` request `request`, typed differently by glibc
    /// and musl, hence the casts of callers) on this socket: no new descriptor is needed, so the
    /// answer does not depend on the open-files limit.
    fn interface_request(&self, interface: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
        // SAFETY: all-zero is a valid `ifreq`.
        let mut req: libc::ifreq = unsafe { zeroed() };
        let name = interface.as_bytes();
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
            *dst = src as libc::c_char;
        }
        // SAFETY: `req` is a valid, NUL-terminated `ifreq` that outlives the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(req)
    }

    /// The index of `interface` now (`SIOCGIFINDEX`): `None` only when the kernel says there
    /// is no such device.
    ///
    /// # Errors
    ///
    /// Any other failure, which says nothing about the interface.
    pub fn interface_index(&self, interface: &str) -> io::Result<Option<u32>> {
        match self.interface_request(interface, libc::SIOCGIFINDEX as _) {
            // SAFETY: SIOCGIFINDEX fills the `ifru_ifindex` member.
            Ok(req) => Ok(u32::try_from(unsafe { req.ifr_ifru.ifru_ifindex }).ok()),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// What precedes the IP header on `interface`, from its hardware type (`SIOCGIFHWADDR`).
    pub fn link_layer(&self, interface: &str) -> Result<LinkLayer, SocketError> {
        let req = self
            .interface_request(interface, libc::SIOCGIFHWADDR as _)
            .map_err(|source| SocketError::LinkType {
                interface: interface.to_owned(),
                source,
            })?;
        // SAFETY: SIOCGIFHWADDR fills the `ifru_hwaddr` member.
        let arphrd = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
        match arphrd {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Ok(LinkLayer::Ethernet),
            ARPHRD_RAWIP | ARPHRD_NONE => Ok(LinkLayer::RawIp),
            arphrd => Err(SocketError::UnsupportedLinkType {
                interface: interface.to_owned(),
                arphrd,
            }),
        }
    }

    /// Starts receiving every protocol on interface `ifindex`.
    pub fn bind(&self, ifindex: u32) -> Result<(), SocketError> {
        let bind_error = |source| SocketError::Bind { ifindex, source };
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = i32::try_from(ifindex)
            .map_err(|_| bind_error(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `addr` is a valid `sockaddr_ll` of the size given.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(bind_error(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Attaches the loaded socket filter `program` (`SO_ATTACH_BPF`): the socket then receives
    /// only what it passes, and detaches it when closed.
    pub fn attach(&self, program: BorrowedFd<'_>) -> Result<(), SocketError> {
        let fd = program.as_raw_fd();
        // SAFETY: the option's value is the program's descriptor, an `int` of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&raw const fd).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(SocketError::Attach(io::Error::last_os_error()));
        }
        Ok(())
    }
}
