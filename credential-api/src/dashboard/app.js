// geoturn fleet dashboard. Served by the credential API at /dashboard/app.js and compiled into
// the binary: no framework, no CDN, nothing inline (the page's Content-Security-Policy allows
// only this origin's files).
//
// Data: GET v1/events (server-sent events read with fetch(), because EventSource cannot send an
// Authorization header), else GET v1/relays every 2 s. Both carry the same JSON: the relays'
// registry records with heartbeatAgeMs and stale, fetchedAt, staleAfterMs, and whether the
// API could read the registry (stale, error). The charts start from GET v1/history (the last
// hour the API recorded, so they survive a reload) and go on from the live snapshots, bucketed
// as the API does: one point per step, the step's last snapshot wins, stale snapshots skipped.
//
// Rendering: each update rebuilds the table body and the map's marker group in one assignment
// each (throttled to the machine's speed); rows are grid rows with content-visibility, so those
// off screen are not laid out; every click is handled by one listener on a container
// (no per-row listeners to leak), so 500 relays stay cheap.
'use strict';

(() => {
  const KEY_STORAGE = 'geoturn.dashboard.apiKey';
  const POLL_MS = 2000;            // polling period when the event stream is unavailable
  const STREAM_RETRY_MS = 30000;   // while polling, try the event stream again this often
  const SHORT_STREAM_MS = 5000;    // a stream that ends sooner than this counts as a failure
  const STREAM_IDLE_MS = 45000;    // no byte (not even a keep-alive) for this long: reconnect
  const MAX_BUFFER = 16 << 20;     // one event larger than this is refused
  const LINGER_MIN_MS = 5000;      // a relay gone from the registry stays greyed this long at least
  const DRAIN_HINT_MS = 60000;     // a requested drain shows until the record says so, at most this
  const TOAST_MS = 6000;
  const MIN_RENDER_GAP_MS = 100;

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $('key-form'), key: $('key'), forget: $('forget'), feed: $('feed'), snapshot: $('snapshot'),
    updated: $('updated'), banner: $('banner'), toast: $('toast'), rows: $('rows'), head: $('relay-head'),
    filter: $('filter'), shown: $('shown'), markers: $('markers'), regionRows: $('region-rows'),
    regionTotal: $('region-total'), confirm: $('confirm'), confirmId: $('confirm-id'),
    fleetCharts: $('fleet-charts'), regionCharts: $('region-charts'), historyNote: $('history-note'),
    relayHistory: $('relay-history'), rhId: $('rh-id'), rhRegion: $('rh-region'), rhNote: $('rh-note'),
    rhCharts: $('rh-charts'),
  };

  const state = {
    key: null,
    generation: 0,          // bumped on connect/forget: older loops stop
    abort: null,            // AbortController of the request in flight
    relays: new Map(),      // id -> view (see merge)
    meta: null,             // fetchedAtMs, staleAfterMs, stale, error of the last snapshot
    receivedAt: 0,          // performance.now() of the last snapshot
    sort: { key: 'region', dir: 1 },
    filter: '',
    admin: null,            // null: not known yet; false: the API said 403 to a drain
    drains: new Map(),      // id -> { startedAt, at }: drains this page asked for
    renderQueued: false,
    holdRender: false,      // a pointer is down on the table: do not swap rows under it
    renders: 0,
    lastRenderAt: 0,        // performance.now() when the last render ended
    lastRenderMs: 0,        // how long it took, layout included
    drawnData: false,       // a snapshot has been drawn (for the first-render mark)
  };

  // The charts' data: the API's history, then the live snapshots (see appendSnapshot).
  const hist = {
    loaded: false,
    stepMs: 10000,
    n: 360,                 // points a series holds
    skewMs: 0,              // the API's clock minus ours, from generatedAt
    fleet: [],              // points {t, allocations, bpsIn, bpsOut, active, draining, stale}
    regions: new Map(),     // region -> points
    dirty: false,           // charts need drawing
    relay: null,            // the relay history open: { id, region, points, loaded }
  };

  // ---------- formatting ----------

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  // One formatter and plain comparisons: toLocaleString and localeCompare build a new Intl
  // object per call, which at 500 rows costs most of a render.
  const numberFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const int = (n) => numberFormat.format(Math.round(n));
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  function si(n, unit) {
    const steps = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (const [f, p] of steps) {
      if (n >= f) return `${(n / f).toFixed(n / f >= 100 ? 0 : 1)} ${p}${unit}`;
    }
    return `${Math.round(n)} ${unit}`;
  }
  const bits = (n) => si(n, 'bit/s');
  const pps = (n) => si(n, '').trim();
  const pct = (x) => (x >= 0.1 || x === 0 ? (x * 100).toFixed(0) : (x * 100).toFixed(1)) + ' %';
  function age(ms) {
    if (ms < 10000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 120000) return Math.round(ms / 1000) + ' s';
    if (ms < 7200000) return Math.round(ms / 60000) + ' min';
    return Math.round(ms / 3600000) + ' h';
  }
  const clock = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour12: false });

  // ---------- model ----------

  function lingerMs() {
    return Math.max(LINGER_MIN_MS, 2 * ((state.meta && state.meta.staleAfterMs) || 0));
  }

  // Merges one snapshot into the relay views. A relay that left the registry is kept for
  // lingerMs(), greyed: the registry's record lives exactly as long as the stale limit, so a
  // relay that dies would otherwise vanish without ever being seen stale.
  function merge(snap) {
    const now = performance.now();
    const seen = new Set();
    for (const r of snap.relays || []) {
      if (!r || typeof r.id !== 'string') continue;
      seen.add(r.id);
      const prev = state.relays.get(r.id);
      // Heartbeat age: as the API measured it when it read the registry, growing on our clock
      // until a newer heartbeat arrives (so it keeps counting while Redis is unreachable).
      const sameBeat = prev && !prev.gone && prev.updatedAt === r.updatedAt;
      const view = {
        ...r,
        urls: Array.isArray(r.urls) ? r.urls : [],
        ageBase: sameBeat ? prev.ageBase : (r.heartbeatAgeMs || 0),
        ageAt: sameBeat ? prev.ageAt : now,
        gone: false,
        goneAt: 0,
      };
      state.relays.set(r.id, derive(view));
    }
    for (const [id, v] of state.relays) {
      if (seen.has(id)) continue;
      if (!v.gone) {
        v.gone = true;
        v.goneAt = now;
        derive(v);
      }
    }
    state.meta = {
      fetchedAtMs: Date.parse(snap.fetchedAt) || 0,
      staleAfterMs: snap.staleAfterMs || 0,
      stale: !!snap.stale,
      error: snap.error || null,
    };
    state.receivedAt = now;
    appendSnapshot(snap);
    expire(now);
    queueRender();
  }

  function expire(now) {
    let changed = false;
    for (const [id, v] of state.relays) {
      if (v.gone && now - v.goneAt > lingerMs()) {
        state.relays.delete(id);
        state.drains.delete(id);
        changed = true;
      }
    }
    for (const [id, d] of state.drains) {
      if (now - d.at > DRAIN_HINT_MS) state.drains.delete(id);
    }
    return changed;
  }

  function derive(v) {
    const allocLoad = v.capacityAllocations > 0 ? v.allocations / v.capacityAllocations : 0;
    const bw = (v.bpsIn || 0) + (v.bpsOut || 0);
    const bwLoad = v.capacityMbps > 0 ? bw / (v.capacityMbps * 1e6) : 0;
    v.allocLoad = allocLoad;
    v.bwLoad = bwLoad;
    v.load = Math.max(allocLoad, bwLoad);
    const asked = state.drains.get(v.id);
    const drainAsked = asked && asked.startedAt === v.startedAt;
    if (v.gone) {
      v.status = v.state === 'draining' || drainAsked ? 'drained' : 'stale';
    } else if (v.stale) {
      v.status = 'stale';
    } else if (v.state === 'draining' || drainAsked) {
      v.status = 'draining';
    } else {
      v.status = v.state || 'unknown';
    }
    v.search = `${v.region} ${v.id} ${v.urls.join(' ')} ${v.status} ${v.version}`.toLowerCase();
    return v;
  }

  const currentAge = (v, now) => v.ageBase + (now - v.ageAt);

  // ---------- rendering ----------

  // Updates may come 5 times a second; a render waits until 4 render-times have passed since
  // the last, so however slow the machine, the page spends at most a fifth of its time drawing
  // and stays responsive to clicks and typing.
  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    const gap = Math.max(MIN_RENDER_GAP_MS, 4 * state.lastRenderMs);
    const wait = Math.max(0, state.lastRenderAt + gap - performance.now());
    setTimeout(() => requestAnimationFrame(() => {
      state.renderQueued = false;
      if (state.holdRender) return; // flushed when the pointer is released
      render();
    }), wait);
  }

  const sortValue = {
    region: (v) => v.region, id: (v) => v.id, urls: (v) => v.urls[0] || '', status: (v) => v.status,
    allocations: (v) => v.allocations, load: (v) => v.load, bps_in: (v) => v.bpsIn, bps_out: (v) => v.bpsOut,
    pps_in: (v) => v.ppsIn, pps_out: (v) => v.ppsOut, age: (v) => v.ageBase - v.ageAt, version: (v) => v.version,
  };

  function compare(a, b) {
    const f = sortValue[state.sort.key] || sortValue.region;
    const x = f(a), y = f(b);
    let c = typeof x === 'string' ? cmp(x, y) : x - y;
    if (c === 0) c = cmp(a.region, b.region) || cmp(a.id, b.id);
    return c * state.sort.dir;
  }

  // "turn:h:3478?transport=udp", "turn:h:3478?transport=tcp", "turns:n:5349?transport=tcp"
  //   -> "h:3478 udp tcp · n:5349 tls" (the full URLs are the cell's title and are searched)
  function shortUrls(urls) {
    const groups = new Map();
    for (const u of urls) {
      const [base, query] = u.split('?');
      const tls = /^(turns|stuns):/i.test(base);
      const hostPort = base.replace(/^[a-z]+:/i, '');
      const t = /transport=([a-z]+)/i.exec(query || '');
      if (!groups.has(hostPort)) groups.set(hostPort, new Set());
      groups.get(hostPort).add(tls ? 'tls' : t ? t[1].toLowerCase() : 'udp');
    }
    return [...groups].map(([hp, ts]) => `<span class="url">${esc(hp)} <small>${esc([...ts].join(' '))}</small></span>`).join(' ');
  }

  const loadClass = (v) => v.status === 'stale' || v.status === 'drained' ? 'stale'
    : v.status === 'draining' ? 'draining' : v.load > 0.8 ? 'hot' : v.load >= 0.5 ? 'warn' : 'ok';

  function statusCell(v) {
    const label = {
      active: 'active', draining: 'draining', stale: v.gone ? 'stale · gone' : 'stale',
      drained: 'drained · gone',
    }[v.status] || v.status;
    return `<span class="badge ${esc(v.status)}">${esc(label)}</span>`;
  }

  // A draining relay's state says, as a tooltip, when it closes the allocations it still
  // holds (its heartbeat carries the deadline; until then there is none to show).
  function drainTitle(v) {
    const at = v.status === 'draining' && v.drainDeadline ? Date.parse(v.drainDeadline) : NaN;
    if (!Number.isFinite(at)) return '';
    const left = Math.max(0, Math.round((at - Date.now()) / 1000));
    return `closes what is left at ${new Date(at).toLocaleTimeString()} (in ${left} s)`;
  }

  function rowHtml(v, now) {
    const canDrain = !v.gone && v.status !== 'draining' && v.status !== 'stale';
    const title = state.admin === false ? 'This API key has no admin scope' : `Drain ${v.id}`;
    const button = canDrain
      ? `<button type="button" class="drain" data-id="${esc(v.id)}" title="${esc(title)}"${state.admin === false ? ' disabled' : ''}>Drain</button>`
      : '';
    const cls = v.status === 'stale' || v.status === 'drained' ? 'stale' : v.status;
    const cell = (content, c = '', title = '') => `<span role="cell"${c ? ` class="${c}"` : ''}${title ? ` title="${esc(title)}"` : ''}>${content}</span>`;
    // Every cell that can be cut short ("…") carries its whole value as its title (tooltip).
    const allocs = `${int(v.allocations)} / ${int(v.capacityAllocations)}`;
    const text = (value, c = 'num') => cell(esc(value), c, value);
    return `<div role="row" class="r ${esc(cls)}" data-id="${esc(v.id)}" data-status="${esc(v.status)}">`
      + cell(esc(v.region), '', v.region)
      + cell(`<a href="#relay=${esc(encodeURIComponent(v.id))}" title="${esc(`${v.id}: history of the last hour`)}">${esc(v.id)}</a>`, 'id')
      + cell(shortUrls(v.urls), 'urls', v.urls.join('\n'))
      + cell(statusCell(v), '', drainTitle(v))
      + cell(`${int(v.allocations)}<small> / ${int(v.capacityAllocations)}</small>`, 'num', `${allocs} allocations`)
      + cell(`<span class="load ${loadClass(v)}">${pct(v.load)}</span>`, 'num', `allocations ${pct(v.allocLoad)}, bandwidth ${pct(v.bwLoad)}`)
      + text(bits(v.bpsIn)) + text(bits(v.bpsOut))
      + text(pps(v.ppsIn)) + text(pps(v.ppsOut))
      + text(age(currentAge(v, now)))
      + cell(esc(v.version), 'version', v.version)
      + cell(button, 'actions') + '</div>';
  }

  // Radius in map degrees: by the share of allocations in use, smaller in a large fleet so that
  // relays in one city stay apart.
  function markerHtml(v, scale) {
    const x = (Number(v.lon) + 180).toFixed(2);
    const y = (90 - Number(v.lat)).toFixed(2);
    const r = (scale * (1.8 + 3.4 * Math.sqrt(Math.min(1, v.allocLoad)))).toFixed(2);
    const tip = `${v.id} (${v.region}): ${v.status}, load ${pct(v.load)}, ${int(v.allocations)} allocations, ${bits(v.bpsIn + v.bpsOut)}`;
    return `<circle class="m ${loadClass(v)}" cx="${x}" cy="${y}" r="${r}" data-id="${esc(v.id)}"><title>${esc(tip)}</title></circle>`;
  }

  function setMeter(id, x) {
    $(id).style.width = `${Math.min(100, Math.max(0, x * 100)).toFixed(1)}%`;
  }

  function render() {
    const t0 = performance.now();
    state.renders += 1;
    const now = performance.now();
    const all = [...state.relays.values()];
    const present = all.filter((v) => !v.gone);

    // Totals and regions (relays still in the registry).
    const zero = () => ({ n: 0, active: 0, draining: 0, stale: 0, alloc: 0, cap: 0, bin: 0, bout: 0, bcap: 0 });
    const regions = new Map();
    const total = zero();
    let busiest = null;
    for (const v of present) {
      if (!regions.has(v.region)) regions.set(v.region, zero());
      for (const t of [total, regions.get(v.region)]) {
        t.n += 1;
        if (v.status === 'stale') t.stale += 1; else if (v.status === 'draining') t.draining += 1; else t.active += 1;
        t.alloc += v.allocations; t.cap += v.capacityAllocations;
        t.bin += v.bpsIn; t.bout += v.bpsOut; t.bcap += v.capacityMbps * 1e6;
      }
      if (v.status !== 'stale' && (!busiest || v.load > busiest.load)) busiest = v;
    }
    $('t-relays').textContent = int(total.n);
    const gone = all.length - present.length;
    $('t-relays-sub').textContent = `${total.active} active · ${total.draining} draining · ${total.stale} stale${gone ? ` · ${gone} gone` : ''}`;
    $('region-count').textContent = String(regions.size);
    $('t-allocs').textContent = int(total.alloc);
    $('t-allocs-sub').textContent = `of ${int(total.cap)} (${pct(total.cap ? total.alloc / total.cap : 0)})`;
    setMeter('t-allocs-meter', total.cap ? total.alloc / total.cap : 0);
    $('t-bw').textContent = bits(total.bin + total.bout);
    $('t-bw-sub').textContent = `${pct(total.bcap ? (total.bin + total.bout) / total.bcap : 0)} of ${bits(total.bcap)}`;
    $('t-bw-sub2').textContent = `in ${bits(total.bin)} · out ${bits(total.bout)}`;
    setMeter('t-bw-meter', total.bcap ? (total.bin + total.bout) / total.bcap : 0);
    $('t-max').textContent = busiest ? pct(busiest.load) : '–';
    $('t-max-sub').textContent = busiest ? `${busiest.id} (${busiest.region})` : '';

    const regionRow = (name, t, tag) => `<tr${name ? ` data-region="${esc(name)}"` : ''}>`
      + `<${tag}>${name ? esc(name) : 'all regions'}</${tag}>`
      + `<td class="num">${t.n}${t.stale || t.draining ? `<br><small>${[t.draining && `${t.draining} draining`, t.stale && `${t.stale} stale`].filter(Boolean).join(', ')}</small>` : ''}</td>`
      + `<td class="num">${int(t.alloc)}</td>`
      + `<td class="num">${pct(t.cap ? t.alloc / t.cap : 0)}</td>`
      + `<td class="num">${bits(t.bin + t.bout)}</td>`
      + `<td class="num">${pct(t.bcap ? (t.bin + t.bout) / t.bcap : 0)}</td></tr>`;
    el.regionRows.innerHTML = [...regions].sort((a, b) => cmp(a[0], b[0]))
      .map(([name, t]) => regionRow(name, t, 'td')).join('');
    el.regionTotal.innerHTML = regionRow('', total, 'th');

    // Table: filtered, sorted, one assignment.
    const terms = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = all.filter((v) => terms.every((t) => v.search.includes(t))).sort(compare);
    el.rows.innerHTML = shown.map((v) => rowHtml(v, now)).join('');
    el.shown.textContent = terms.length ? `${shown.length} of ${all.length}` : `${all.length}`;
    for (const th of el.head.querySelectorAll('[data-key]')) {
      const on = th.dataset.key === state.sort.key;
      th.setAttribute('aria-sort', on ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
    }

    // Map: one group; calm first so busy, draining and stale markers stay visible on top.
    const rank = { ok: 0, warn: 1, hot: 2, draining: 3, stale: 4 };
    const scale = all.length > 40 ? Math.max(0.45, Math.sqrt(40 / all.length)) : 1;
    el.markers.innerHTML = all.map((v) => [rank[loadClass(v)], v.load, v])
      .sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, , v]) => markerHtml(v, scale)).join('');

    if (hist.dirty) renderCharts();
    renderStatus(now);
    // Reading a size forces the layout now, so the time measured includes it.
    void el.rows.offsetHeight;
    state.lastRenderAt = performance.now();
    state.lastRenderMs = state.lastRenderAt - t0;
    if (state.meta && !state.drawnData) {
      state.drawnData = true;
      performance.mark('geoturn:first-render');
    }
    document.body.dataset.relays = String(all.length);
    document.body.dataset.renderMs = state.lastRenderMs.toFixed(1);
    document.body.dataset.renders = String(state.renders);
  }

  function renderStatus(now) {
    const m = state.meta;
    if (!m) return;
    if (m.stale) {
      setPill(el.snapshot, 'bad', 'registry unreachable');
      showBanner(`The API cannot read the registry (Redis): ${m.error || 'no answer'}. `
        + `Showing the fleet as last read at ${m.fetchedAtMs ? clock(m.fetchedAtMs) : 'never'}; heartbeat ages keep counting.`);
    } else {
      setPill(el.snapshot, 'ok', 'registry ok');
      if (el.banner.dataset.kind === 'registry') hideBanner();
    }
    el.updated.textContent = state.receivedAt ? `updated ${age(now - state.receivedAt)} ago` : '';
  }

  function setPill(node, kind, text) {
    node.className = `pill ${kind}`;
    node.textContent = text;
  }

  function setFeed(mode) {
    const labels = { live: ['ok', 'live'], polling: ['warn', 'polling every 2 s'], connecting: ['off', 'connecting…'], off: ['off', 'not connected'], down: ['bad', 'API unreachable'] };
    const [kind, text] = labels[mode];
    setPill(el.feed, kind, text);
    el.feed.dataset.mode = mode;
  }

  function showBanner(text, kind = 'registry') {
    el.banner.textContent = text;
    el.banner.dataset.kind = kind;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.banner.dataset.kind = '';
  }

  let toastTimer = 0;
  function toast(text, kind) {
    el.toast.textContent = text;
    el.toast.className = `toast ${kind}`;
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, TOAST_MS);
  }


  // ---------- history ----------

  const point = (p) => ({
    t: Date.parse(p.at), allocations: p.allocations || 0, bpsIn: p.bpsIn || 0, bpsOut: p.bpsOut || 0,
    active: p.active || 0, draining: p.draining || 0, stale: p.stale || 0,
  });
  const points = (list) => (Array.isArray(list) ? list.map(point).filter((p) => p.t > 0) : []);

  // As the API's ring: the newest point of a step replaces the step's, an older one is dropped,
  // and a series keeps hist.n points.
  function put(series, p) {
    const last = series[series.length - 1];
    if (last && last.t > p.t) return;
    if (last && last.t === p.t) series[series.length - 1] = p;
    else series.push(p);
    if (series.length > hist.n) series.splice(0, series.length - hist.n);
  }

  function prune(series, cutoff) {
    let i = 0;
    while (i < series.length && series[i].t < cutoff) i += 1;
    if (i) series.splice(0, i);
  }

  function addRelay(p, r) {
    p.allocations += r.allocations || 0;
    p.bpsIn += r.bpsIn || 0;
    p.bpsOut += r.bpsOut || 0;
    if (r.stale) p.stale += 1; else if (r.state === 'draining') p.draining += 1; else p.active += 1;
  }

  // One live snapshot into the step it was read in, as the API records it (a snapshot of a
  // registry that could not be read is left out there too).
  function appendSnapshot(snap) {
    const fetched = Date.parse(snap.fetchedAt);
    if (!hist.loaded || snap.stale || !fetched) return;
    const t = fetched - (fetched % hist.stepMs);
    const empty = () => ({ t, allocations: 0, bpsIn: 0, bpsOut: 0, active: 0, draining: 0, stale: 0 });
    const fleet = empty();
    const regions = new Map();
    const open = hist.relay;
    let mine = null;
    for (const r of snap.relays || []) {
      if (!r || typeof r.region !== 'string') continue;
      addRelay(fleet, r);
      if (!regions.has(r.region)) regions.set(r.region, empty());
      addRelay(regions.get(r.region), r);
      if (open && r.id === open.id) { mine = empty(); addRelay(mine, r); }
    }
    const cutoff = t - (hist.n - 1) * hist.stepMs;
    put(hist.fleet, fleet);
    prune(hist.fleet, cutoff);
    for (const [name, p] of regions) {
      if (!hist.regions.has(name)) hist.regions.set(name, []);
      put(hist.regions.get(name), p);
    }
    for (const [name, series] of hist.regions) {
      prune(series, cutoff);
      if (!series.length) hist.regions.delete(name);
    }
    if (open && open.loaded) {
      if (mine) put(open.points, mine);
      prune(open.points, cutoff);
    }
    hist.dirty = true;
  }

  async function loadHistory(gen) {
    el.historyNote.textContent = 'loading history…';
    let res;
    try {
      res = await fetch(api('v1/history'), { headers: authHeaders(), cache: 'no-store' });
    } catch (e) {
      if (gen === state.generation) el.historyNote.textContent = `history unavailable: ${e.message}`;
      return;
    }
    if (gen !== state.generation) return;
    if (!res.ok) {
      el.historyNote.textContent = `history unavailable: ${await errorOf(res)}`;
      return;
    }
    const body = await res.json();
    if (gen !== state.generation) return;
    hist.stepMs = Number(body.stepMs) || 10000;
    hist.n = Number(body.points) || 360;
    hist.skewMs = (Date.parse(body.generatedAt) || Date.now()) - Date.now();
    hist.fleet = points(body.fleet);
    hist.regions = new Map((body.regions || []).map((r) => [r.region, points(r.points)]));
    hist.loaded = true;
    hist.dirty = true;
    const untracked = body.untrackedRelays ? `; ${body.untrackedRelays} relays beyond the ${body.maxRelays} tracked` : '';
    el.historyNote.textContent = `one point per ${age(hist.stepMs)}, kept by this API instance${untracked}`;
    $('history-title').textContent = `Last ${windowLabel()}`;
    document.body.dataset.historyLoadedAt = String(Date.now());
    performance.mark('geoturn:history');
    queueRender();
  }

  const span = (ms) => (ms >= 3600000 && ms % 3600000 === 0 ? (ms === 3600000 ? 'hour' : `${ms / 3600000} hours`)
    : ms >= 120000 ? `${Math.round(ms / 60000)} min` : `${Math.round(ms / 1000)} s`);
  const windowLabel = () => span(hist.stepMs * hist.n);

  // The time every chart spans: up to the current step, from the window's start or, while this
  // API instance has recorded less than that (just started), from its oldest point (at least
  // MIN_STEPS steps): a fresh history fills the width instead of a sliver at the right edge.
  const MIN_STEPS = 10;
  function timeAxis() {
    const step = hist.stepMs;
    const now = Date.now() + hist.skewMs;
    const end = now - (now % step);
    const windowStart = end - (hist.n - 1) * step;
    const oldest = hist.fleet.length ? hist.fleet[0].t : end;
    const start = Math.max(windowStart, Math.min(oldest, end - (MIN_STEPS - 1) * step));
    return { start, end, steps: (end - start) / step };
  }

  // A small chart of `lines` over the window ending at the current step. Drawn as SVG paths
  // (one unit per step across, the peak at the top); a missing step breaks the line. The svg
  // carries the steps it draws (data-t, Unix ms) and each path its values (data-v), so what is
  // drawn can be checked against the API's numbers.
  function chart(key, title, series, lines, fmt) {
    const step = hist.stepMs;
    const { start, end, steps } = timeAxis();
    const shown = series.filter((p) => p.t >= start && p.t <= end);
    const H = 40;
    let peak = 0;
    for (const p of shown) for (const l of lines) peak = Math.max(peak, l.value(p));
    const top = peak > 0 ? peak * 1.1 : 1;
    const paths = lines.map((l) => {
      let d = '';
      let prev = null;
      for (const p of shown) {
        const x = ((p.t - start) / step).toFixed(2);
        const y = (H - (l.value(p) / top) * H).toFixed(2);
        // A new sub-path after a missing step; a lone point is a dot (round caps).
        d += prev !== null && p.t - prev === step ? ` L${x} ${y}` : ` M${x} ${y} l0 0`;
        prev = p.t;
      }
      return `<path class="${l.cls}" d="${d.trim()}" data-v="${shown.map((p) => l.value(p)).join(',')}"><title>${esc(l.label)}</title></path>`;
    }).join('');
    const last = shown[shown.length - 1];
    const now2 = last ? lines.map((l) => `<span class="${l.key || ''}">${esc(fmt(l.value(last)))}</span>`).join(' · ') : 'no data yet';
    const label = `${title}, last ${span(end - start)}: ${shown.length} points, peak ${fmt(peak)}`;
    return `<figure class="chart" data-chart="${esc(key)}">`
      + `<figcaption><span>${esc(title)}</span><span class="now">${now2}</span></figcaption>`
      + `<svg viewBox="0 0 ${steps} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(label)}" data-t="${shown.map((p) => p.t).join(',')}">`
      + `<line class="grid" x1="0" y1="${H}" x2="${steps}" y2="${H}"/>${paths}</svg>`
      + `<div class="axis"><span class="edge">−${span(end - start)}</span><span>peak ${esc(fmt(peak))}</span><span class="edge">now</span></div></figure>`;
  }

  const LINES = {
    allocations: [{ cls: 'l-alloc', label: 'allocations', value: (p) => p.allocations }],
    bandwidth: [
      { cls: 'l-in', key: 'key-in', label: 'bit/s in (client → peer)', value: (p) => p.bpsIn },
      { cls: 'l-out', key: 'key-out', label: 'bit/s out (peer → client)', value: (p) => p.bpsOut },
    ],
    total: [{ cls: 'l-in', label: 'bit/s in + out', value: (p) => p.bpsIn + p.bpsOut }],
    relays: [
      { cls: 'l-active', label: 'active', value: (p) => p.active },
      { cls: 'l-draining', key: 'key-draining', label: 'draining', value: (p) => p.draining },
      { cls: 'l-stale', key: 'key-stale', label: 'stale', value: (p) => p.stale },
    ],
  };

  function renderCharts() {
    hist.dirty = false;
    if (!hist.loaded) {
      el.fleetCharts.innerHTML = '';
      el.regionCharts.innerHTML = '';
      return;
    }
    el.fleetCharts.innerHTML = chart('fleet-allocations', 'Allocations', hist.fleet, LINES.allocations, int)
      + chart('fleet-bandwidth', 'Bandwidth in · out', hist.fleet, LINES.bandwidth, bits)
      + chart('fleet-relays', 'Relays active · draining · stale', hist.fleet, LINES.relays, int);
    el.regionCharts.innerHTML = [...hist.regions].sort((a, b) => cmp(a[0], b[0])).map(([name, series]) => (
      `<div class="region-chart" data-region="${esc(name)}"><h4 title="${esc(name)}">${esc(name)}</h4><div class="pair">`
      + chart(`region-allocations:${name}`, 'allocations', series, LINES.allocations, int)
      + chart(`region-bandwidth:${name}`, 'bit/s', series, LINES.total, bits)
      + '</div></div>')).join('');
    const r = hist.relay;
    if (r && r.loaded) {
      el.rhCharts.innerHTML = chart(`relay-allocations:${r.id}`, 'Allocations', r.points, LINES.allocations, int)
        + chart(`relay-bandwidth:${r.id}`, 'Bandwidth in · out', r.points, LINES.bandwidth, bits);
    }
    document.body.dataset.historyPoints = String(hist.fleet.length);
  }

  // ---------- one relay's history (#relay=ID: a row's node id links there) ----------

  function relayFromHash() {
    const m = /^#relay=(.+)$/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (_) { return null; }
  }

  async function openRelay(id) {
    if (!state.key) return;
    const gen = state.generation;
    hist.relay = { id, region: '', points: [], loaded: false };
    el.rhId.textContent = id;
    el.rhRegion.textContent = '';
    el.rhNote.textContent = 'loading…';
    el.rhCharts.innerHTML = '';
    if (!el.relayHistory.open) el.relayHistory.showModal();
    let res;
    try {
      res = await fetch(api(`v1/history?relay=${encodeURIComponent(id)}`), { headers: authHeaders(), cache: 'no-store' });
    } catch (e) {
      el.rhNote.textContent = `history unavailable: ${e.message}`;
      return;
    }
    if (gen !== state.generation || !hist.relay || hist.relay.id !== id) return;
    if (!res.ok) {
      el.rhNote.textContent = res.status === 404 ? 'This API instance has no history of this relay (not seen in the window).'
        : `history unavailable: ${await errorOf(res)}`;
      return;
    }
    const body = await res.json();
    if (!hist.relay || hist.relay.id !== id) return;
    const r = body.relay || {};
    hist.relay = { id, region: r.region || '', points: points(r.points), loaded: true };
    el.rhRegion.textContent = hist.relay.region ? `(${hist.relay.region})` : '';
    el.rhNote.textContent = `last ${windowLabel()}, one point per ${age(hist.stepMs)}; updated live`;
    hist.dirty = true;
    renderCharts();
  }

  // ---------- talking to the API ----------

  const api = (path) => new URL(path, document.baseURI).toString();
  const authHeaders = () => ({ Authorization: `Bearer ${state.key}` });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function errorOf(res) {
    try {
      const body = await res.json();
      // RFC 9457 problem details (`detail`, `code`); `error` is the older shape.
      if (body && body.detail) return `${body.detail} (${body.code})`;
      if (body && body.error) return `${body.error.message} (${body.error.code})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${res.status}`;
  }

  function refused(message) {
    // Stop every loop, forget the stored key, and ask again.
    state.generation += 1;
    if (state.abort) state.abort.abort();
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    showBanner(`The API refused this key: ${message}`, 'auth');
    showKeyForm(true);
    setFeed('off');
  }

  function showKeyForm(show) {
    el.key.hidden = !show;
    $('key-label').hidden = !show;
    $('connect').hidden = !show;
    el.forget.hidden = show;
  }

  function handleBlock(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue; // keep-alive comment
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (event === 'snapshot' && data.length) {
      const snap = JSON.parse(data.join('\n'));
      if (!state.meta) performance.mark('geoturn:first-snapshot');
      merge(snap);
    }
  }

  // Reads one event stream until it ends. Resolves to 'ended', 'failed' or 'refused'.
  async function stream(gen) {
    const ctrl = new AbortController();
    state.abort = ctrl;
    let res;
    try {
      res = await fetch(api('v1/events'), { headers: { ...authHeaders(), Accept: 'text/event-stream' }, cache: 'no-store', signal: ctrl.signal });
    } catch (_) {
      return 'failed';
    }
    if (res.status === 401 || res.status === 403) {
      if (gen === state.generation) refused(await errorOf(res));
      return 'refused';
    }
    if (!res.ok || !res.body) return 'failed';
    if (gen !== state.generation) { ctrl.abort(); return 'failed'; }
    setFeed('live');
    // Each new stream: the history again (it covers what this page missed while away).
    loadHistory(gen);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== state.generation) return 'ended';
        clearTimeout(idle);
        idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
        buf += value.replace(/\r\n?/g, '\n');
        if (buf.length > MAX_BUFFER) return 'failed';
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          handleBlock(block);
        }
      }
    } catch (_) {
      return 'failed';
    } finally {
      clearTimeout(idle);
      ctrl.abort();
    }
  }

  // Polls v1/relays every POLL_MS for `forMs`. Resolves to 'done' or 'refused'.
  async function poll(gen, forMs) {
    const until = performance.now() + forMs;
    let historyAsked = false;
    while (gen === state.generation && performance.now() < until) {
      const ctrl = new AbortController();
      state.abort = ctrl;
      const timer = setTimeout(() => ctrl.abort(), POLL_MS * 3);
      let wait = POLL_MS;
      try {
        const res = await fetch(api('v1/relays'), { headers: authHeaders(), cache: 'no-store', signal: ctrl.signal });
        if (res.status === 401 || res.status === 403) {
          if (gen === state.generation) refused(await errorOf(res));
          return 'refused';
        }
        if (res.status === 429) {
          wait = Math.max(POLL_MS, 1000 * Number(res.headers.get('retry-after') || 2));
        } else if (res.ok) {
          const body = await res.json();
          if (gen !== state.generation) return 'done';
          setFeed('polling');
          if (!hist.loaded && !historyAsked) { historyAsked = true; loadHistory(gen); }
          if (!state.meta) performance.mark('geoturn:first-snapshot');
          merge(body);
        } else {
          setFeed('down');
        }
      } catch (_) {
        if (gen === state.generation) setFeed('down');
      } finally {
        clearTimeout(timer);
      }
      await sleep(wait);
    }
    return 'done';
  }

  // The event stream while it works; polling (and a new try of the stream every 30 s) when not.
  async function run(gen) {
    setFeed('connecting');
    while (gen === state.generation) {
      const started = performance.now();
      const outcome = await stream(gen);
      if (outcome === 'refused' || gen !== state.generation) return;
      if (outcome === 'ended' && performance.now() - started >= SHORT_STREAM_MS) continue;
      if (await poll(gen, STREAM_RETRY_MS) === 'refused') return;
    }
  }

  // ---------- inter-region RTT (GET v1/mesh, every 5 s while connected) ----------

  const MESH_POLL_MS = 5000;

  function meshRowHtml(p) {
    const ms = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(1)} ms`);
    const measured = p.stale ? `${ms(p.lastMs)} (stale)` : ms(p.measuredMs);
    const ageCell = p.ageMs === null ? '–' : age(p.ageMs);
    return `<tr${p.stale ? ' class="stale"' : ''}><td>${esc(p.from)} ↔ ${esc(p.to)}</td>`
      + `<td class="num">${esc(measured)}</td><td class="num">${p.samples}</td>`
      + `<td class="num">${esc(ageCell)}</td><td class="num">${esc(ms(p.overrideMs))}</td>`
      + `<td class="num">${esc(ms(p.effectiveMs))}</td></tr>`;
  }

  async function loadMesh(gen) {
    const body = document.getElementById('mesh-rows');
    while (gen === state.generation) {
      try {
        const res = await fetch(api('v1/mesh'), { headers: authHeaders(), cache: 'no-store' });
        if (res.ok && body) {
          const m = await res.json();
          body.innerHTML = m.regions.length
            ? m.regions.map(meshRowHtml).join('')
            : '<tr><td colspan="6" class="muted">no measurements yet (relays need --mesh-listen)</td></tr>';
        }
      } catch (_) { /* the feed's own banner reports an unreachable API */ }
      await new Promise((r) => setTimeout(r, MESH_POLL_MS));
    }
  }

  function connect(key) {
    performance.mark('geoturn:connect');
    state.generation += 1;
    if (state.abort) state.abort.abort();
    state.key = key;
    state.relays.clear();
    state.drains.clear();
    state.admin = null;
    state.meta = null;
    hist.loaded = false;
    hist.fleet = [];
    hist.regions = new Map();
    hist.dirty = true;
    hideBanner();
    el.key.value = '';
    showKeyForm(false);
    queueRender();
    run(state.generation);
    loadMesh(state.generation);
    const relay = relayFromHash();
    if (relay) openRelay(relay);
  }

  // ---------- drain ----------

  let confirmFor = null;

  function askDrain(id) {
    const v = state.relays.get(id);
    if (!v || state.admin === false) return;
    confirmFor = { id, startedAt: v.startedAt };
    el.confirmId.textContent = id;
    el.confirm.returnValue = '';
    el.confirm.showModal();
  }

  async function drain({ id, startedAt }) {
    let res;
    try {
      res = await fetch(api(`v1/admin/relays/${encodeURIComponent(id)}/drain`), { method: 'POST', headers: authHeaders(), cache: 'no-store' });
    } catch (e) {
      toast(`Drain ${id}: the API did not answer (${e.message})`, 'bad');
      return;
    }
    if (res.status === 202) {
      state.admin = true;
      state.drains.set(id, { startedAt, at: performance.now() });
      const v = state.relays.get(id);
      if (v) derive(v);
      toast(`Drain of ${id} started: it takes no new allocations and exits when its calls end.`, 'ok');
      // The operator's own action shows at once, not at the load-throttled render cadence: a
      // relay without calls may drain and leave before the next throttled render.
      if (state.holdRender) queueRender(); else render();
      return;
    }
    const message = await errorOf(res);
    if (res.status === 403) {
      state.admin = false;
      toast(`Cannot drain ${id}: this API key has no admin scope. ${message}`, 'bad');
      queueRender();
    } else if (res.status === 401) {
      refused(message);
    } else {
      toast(`Cannot drain ${id}: ${message}`, 'bad');
    }
  }

  // ---------- events (one listener per container) ----------

  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const key = el.key.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    connect(key);
  });

  el.forget.addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    state.generation += 1;
    if (state.abort) state.abort.abort();
    state.key = null;
    state.relays.clear();
    state.meta = null;
    hist.loaded = false;
    hist.dirty = true;
    if (el.relayHistory.open) el.relayHistory.close();
    showKeyForm(true);
    setFeed('off');
    setPill(el.snapshot, 'off', 'no data');
    render();
  });

  el.head.addEventListener('click', (e) => {
    const th = e.target.closest('[data-key]');
    if (!th) return;
    const key = th.dataset.key;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    render();
  });

  el.filter.addEventListener('input', () => {
    state.filter = el.filter.value;
    render();
  });

  el.rows.addEventListener('click', (e) => {
    const b = e.target.closest('button.drain');
    if (b && !b.disabled) askDrain(b.dataset.id);
  });

  // Rows are rebuilt on every update: hold that while a button is being pressed, so the click
  // lands on the element that was pressed.
  el.rows.addEventListener('pointerdown', () => { state.holdRender = true; });
  document.addEventListener('pointerup', () => {
    if (!state.holdRender) return;
    setTimeout(() => { state.holdRender = false; queueRender(); }, 0);
  });

  el.markers.addEventListener('click', (e) => {
    const c = e.target.closest('circle[data-id]');
    if (!c) return;
    el.filter.value = c.dataset.id;
    state.filter = c.dataset.id;
    render();
  });

  el.regionRows.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-region]');
    if (!tr) return;
    el.filter.value = tr.dataset.region;
    state.filter = tr.dataset.region;
    render();
  });

  window.addEventListener('hashchange', () => {
    const id = relayFromHash();
    if (id) openRelay(id);
    else if (el.relayHistory.open) el.relayHistory.close();
  });

  el.relayHistory.addEventListener('close', () => {
    hist.relay = null;
    // The link stays shareable while open; closing returns to the fleet's address.
    if (relayFromHash()) history.replaceState(null, '', location.pathname + location.search);
  });

  el.confirm.addEventListener('close', () => {
    const target = confirmFor;
    confirmFor = null;
    if (el.confirm.returnValue === 'drain' && target) drain(target);
  });

  // "Updated … ago", and relays that left the registry, move on without updates; the whole
  // table is redrawn only when a relay leaves or is greyed, or updates stopped (ages grow).
  setInterval(() => {
    if (!state.meta) return;
    const now = performance.now();
    const expired = expire(now);
    const lingering = [...state.relays.values()].some((v) => v.gone);
    if (expired || lingering || now - state.receivedAt > 1500) queueRender();
    else renderStatus(now);
  }, 1000);

  setFeed('off');
  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) connect(stored);
})();
