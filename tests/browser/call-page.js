// A relay-only call in the page (run by browser.mjs): ICE servers from the API (or only the
// given URLs, with the API's credential), two RTCPeerConnections with iceTransportPolicy
// "relay", a data channel, a message and its echo. Returns the ranked relay URLs and each
// side's selected candidate pair (types, addresses, relay protocol).
async ({ key, clientIp, count, onlyUrls, openTimeoutMs }) => {
  const query = `clientIp=${clientIp}${count ? `&count=${count}` : ''}`;
  const r = await fetch(`/v1/ice-servers?${query}`, { headers: { Authorization: `Bearer ${key}` } });
  if (!r.ok) throw new Error(`ice-servers: ${r.status} ${await r.text()}`);
  const answer = await r.json();
  const turn = answer.iceServers.filter((s) => s.username);
  let iceServers = answer.iceServers;
  if (onlyUrls) {
    iceServers = [{ urls: onlyUrls, username: turn[0].username, credential: turn[0].credential }];
  }
  const config = { iceServers, iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  const errors = [];
  for (const [pc, other, name] of [[a, b, 'a'], [b, a, 'b']]) {
    // Firefox ends gathering with an empty candidate string, Chromium with none.
    pc.onicecandidate = (e) => e.candidate && e.candidate.candidate && other.addIceCandidate(e.candidate);
    pc.onicecandidateerror = (e) => errors.push(`${name} ${e.url} ${e.errorCode} ${e.errorText}`);
  }
  const channel = a.createDataChannel('chat');
  const received = new Promise((resolve) => {
    b.ondatachannel = (e) => {
      e.channel.onmessage = (m) => {
        e.channel.send(`echo:${m.data}`);
        resolve(m.data);
      };
    };
  });
  const echoed = new Promise((resolve) => { channel.onmessage = (m) => resolve(m.data); });
  const opened = new Promise((resolve) => { channel.onopen = resolve; });
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const deadline = (ms, what) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what} within ${ms} ms; candidate errors: ${errors.join('; ')}`)), ms));
  const t0 = performance.now();
  await Promise.race([opened, deadline(openTimeoutMs, 'no data channel')]);
  const openMs = Math.round(performance.now() - t0);
  channel.send('hello through the relay');
  const got = await Promise.race([received, deadline(5_000, 'no message')]);
  const echo = await Promise.race([echoed, deadline(5_000, 'no echo')]);
  const pair = async (pc) => {
    const stats = await pc.getStats();
    let selected;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
    });
    if (!selected) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') selected = s;
      });
    }
    const local = stats.get(selected.localCandidateId);
    const remote = stats.get(selected.remoteCandidateId);
    return {
      localType: local.candidateType, localAddress: local.address, relayProtocol: local.relayProtocol,
      url: local.url, remoteType: remote.candidateType, remoteAddress: remote.address,
    };
  };
  // Which relay pair ICE nominates among several TURN servers is the browser's choice: report
  // what it chose.
  const sa = await pair(a);
  const sb = await pair(b);
  a.close();
  b.close();
  return { rankedUrls: turn.map((s) => s.urls[0]), openMs, got, echo, errors, a: sa, b: sb };
}
