// One RTCPeerConnection gathering relay candidates with the API's answer (run by
// browser.mjs): what one connection costs the relays, which the test counts on the relays
// themselves. Returns the answer's TURN URLs and the relay candidates gathered.
async ({ key, clientIp }) => {
  const r = await fetch(`/v1/ice-servers?clientIp=${clientIp}`, {
    headers: { Authorization: `Bearer ${key}` },
  });
  if (!r.ok) throw new Error(`ice-servers: ${r.status} ${await r.text()}`);
  const { iceServers } = await r.json();
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
  const relay = [];
  const done = new Promise((resolve) => {
    pc.onicecandidate = (e) => {
      // Firefox ends gathering with an empty candidate string, Chromium with none.
      if (!e.candidate || !e.candidate.candidate) {
        resolve();
        return;
      }
      if (e.candidate.type === 'relay') relay.push(`${e.candidate.protocol} ${e.candidate.address}`);
    };
  });
  pc.createDataChannel('probe');
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([
    done,
    new Promise((_, reject) => setTimeout(() => reject(new Error('gathering did not complete in 40 s')), 40_000)),
  ]);
  pc.close();
  return { turnUrls: iceServers.filter((s) => s.username).flatMap((s) => s.urls), relayCandidates: relay };
}
