//! TCP relaying (RFC 6062): Connect, ConnectionBind, incoming peers, connections closing with their allocation.

use super::*;

#[test]
fn tcp_relaying_connect_connection_bind_and_incoming_peers() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    // Over UDP, a TCP allocation is refused.
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(400));
    // Over TCP it binds a TCP listening socket.
    h.tuple.transport = Transport::Tcp;
    let control = h.tuple;
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let relay = h.bound[0];
    // No channels on a TCP allocation.
    let resp = h.channel_bind(&auth, 0x4001, peer());
    assert_eq!(code_of(&resp), Some(400));

    // Connect: the driver is asked to connect; the answer waits for it.
    let tid = h.tid();
    let req = encode_request(
        Method::Connect,
        Class::Request,
        tid,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    assert!(h.pump().is_empty());
    let (id, from, to) = h.connects[0];
    assert_eq!((from, to.addr()), (relay, peer()));
    // A second Connect to the same peer: 446.
    let resp = h.request(
        Method::Connect,
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(446));
    let (socket, socket_closed) = peer_handle();
    h.server.handle_peer_connect_result(h.now, id, Some(socket));
    let resp = h.pump().remove(0);
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.transaction_id(), &tid);
    assert_eq!(
        m.attribute(types::CONNECTION_ID).unwrap().unwrap(),
        Attribute::ConnectionId(id.get())
    );

    // ConnectionBind on a new data connection, by another user: 441; by the owner: spliced.
    h.tuple = FiveTuple {
        client: ClientSocket::new(SocketAddr::from(([198, 51, 100, 7], 40500))),
        ..control
    };
    let data_conn = h.tuple;
    let c = RestCredential::mint(SECRET, "mallory", UNIX_START, 3600);
    let mut mallory = ClientAuth {
        username: c.username,
        password: c.password,
        ..auth.clone()
    };
    let challenge = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        None,
    );
    mallory.update_from_challenge(&Message::parse(&challenge).unwrap());
    auth.update_from_challenge(&Message::parse(&challenge).unwrap());
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&mallory),
    );
    assert_eq!(code_of(&resp), Some(441));
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    assert_eq!(h.splices, vec![(data_conn, id)]);
    // A connection binds only once.
    let resp = h.request(
        Method::ConnectionBind,
        &[Attribute::ConnectionId(id.get())],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), Some(400));

    // The driver takes the socket to splice it, and hands back the splice.
    let taken = h.server.tcp.take_socket(id).unwrap();
    assert!(h.server.tcp.set_splice(id, taken).is_ok());
    assert!(!socket_closed.load(Ordering::SeqCst));

    // An incoming peer without permission is refused (its socket closed); with one, the
    // client hears of it.
    let tcp = h.server.tcp.clone();
    let stranger = PeerSocket::new(SocketAddr::from(([203, 0, 113, 77], 1234)));
    let (socket, stranger_closed) = peer_handle();
    h.server
        .handle_peer_tcp_accepted(h.now, relay, stranger, socket);
    assert!(stranger_closed.load(Ordering::SeqCst));
    assert_eq!(tcp.len(), 1);
    let incoming = PeerSocket::new(SocketAddr::from(([203, 0, 113, 50], 9999)));
    let (socket, incoming_closed) = peer_handle();
    h.server
        .handle_peer_tcp_accepted(h.now, relay, incoming, socket);
    let attempt = h.pump().remove(0);
    let m = Message::parse(&attempt).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (Method::ConnectionAttempt, Class::Indication)
    );
    let Some(Ok(Attribute::ConnectionId(id2))) = m.attribute(types::CONNECTION_ID) else {
        panic!("no CONNECTION-ID in {m:?}");
    };
    assert_ne!(id2, id.get());
    assert_eq!(tcp.len(), 2);
    // Nobody binds it within 30 s: closed.
    h.advance(31);
    assert!(incoming_closed.load(Ordering::SeqCst));
    assert_eq!(tcp.len(), 1);
    // The allocation ends: its connections close with it, the spliced one too.
    h.tuple = control;
    // Nonces are bound to the client IP: the data connection's nonce works here too.
    let resp = h.request(Method::Refresh, &[Attribute::Lifetime(0)], Some(&auth));
    assert_eq!(code_of(&resp), None);
    assert!(socket_closed.load(Ordering::SeqCst));
    assert!(tcp.is_empty());
    assert_eq!(h.freed, vec![relay]);
}

#[test]
fn a_connect_that_completes_after_its_allocation_ended_is_closed() {
    let mut h = Harness::new();
    let mut auth = h.credentials(3600);
    h.tuple.transport = Transport::Tcp;
    h.challenge(&mut auth, 6);
    let resp = h.request(
        Method::Allocate,
        &[Attribute::RequestedTransport(6)],
        Some(&auth),
    );
    assert_eq!(code_of(&resp), None);
    let req = encode_request(
        Method::Connect,
        Class::Request,
        h.tid(),
        &[Attribute::XorPeerAddress(peer())],
        Some(&auth),
    )
    .unwrap();
    assert!(h.input(&req).is_none());
    h.pump();
    let (id, _, _) = h.connects[0];
    // The control connection closes while the driver is still connecting.
    let control = h.tuple;
    h.server.handle_client_disconnected(&control);
    h.pump();
    let (socket, closed) = peer_handle();
    h.server.handle_peer_connect_result(h.now, id, Some(socket));
    assert!(
        closed.load(Ordering::SeqCst),
        "no ESTABLISHED socket without an owner"
    );
    assert!(h.server.tcp.is_empty());
}
