import Hummingbird

/// `GET /`: one self-contained page (inline CSS and script, no build step, nothing fetched but
/// this API's own `/status`, `/peers`, `/topology` and `/tags`) that shows the node live.
///
/// The script polls every 2 s, one round at a time (each request aborted after 1.5 s); after a
/// failure it keeps the last figures, says the node is unreachable and backs off, doubling up to
/// 30 s. `/tags` is asked as long as it answers: on 404 the uploads section stays hidden.
///
/// Every figure is an element with a `data-field` naming where it comes from: the key path in
/// `/status` (`chunks`, `storageRadius`, `connections.outbound`, `bins.7.chunks`), `peer.<overlay>.…`
/// for a row of `/peers`, `topology.…` for `/topology` (`topology.known`, `topology.bins.3.connected`),
/// `tag.<uid>.…` for a row of `/tags`, and `page.state`, `page.polls`, `page.failures` for the page itself. `Docs/Monitoring.md` lists them; the browser test reads them.
enum StatusPage {
    /// What the page may load: only itself and this origin's JSON. Enforced by the browser, so
    /// a change that pulled in a script or style from elsewhere would show up as broken.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    static func response() -> Response {
        var buffer = ByteBufferAllocator().buffer(capacity: html.utf8.count)
        buffer.writeString(html)
        return Response(status: .ok, headers: [
            .contentType: "text/html; charset=utf-8",
            .cacheControl: "no-store",
            .contentSecurityPolicy: contentSecurityPolicy,
        ], body: ResponseBody(byteBuffer: buffer))
    }

    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <link rel="icon" href="data:,">
    <title>Shoal node</title>
    <style>
    :root { color-scheme: light dark; --fg: #1d232a; --muted: #66707a; --bg: #f6f7f9; --card: #fff; --line: #dde1e6; --bar: #3a7bd5; --bad: #c0392b; --ok: #2e8b57; }
    @media (prefers-color-scheme: dark) { :root { --fg: #e3e6ea; --muted: #9aa3ad; --bg: #14181d; --card: #1c2127; --line: #2c333b; --bar: #5b9cf0; } }
    * { box-sizing: border-box; }
    body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
    header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; padding: .8rem 1.2rem; border-bottom: 1px solid var(--line); background: var(--card); }
    h1 { font-size: 1.1rem; margin: 0; }
    h2 { font-size: .95rem; margin: 0 0 .5rem; }
    main { display: grid; gap: 1rem; padding: 1rem 1.2rem; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); }
    section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; overflow-x: auto; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
    dt { color: var(--muted); }
    dd { margin: 0; font-variant-numeric: tabular-nums; }
    table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
    th, td { text-align: left; padding: .2rem .5rem .2rem 0; border-bottom: 1px solid var(--line); white-space: nowrap; }
    th { color: var(--muted); font-weight: normal; }
    td.num, th.num { text-align: right; }
    .bar { height: .6rem; background: var(--bar); border-radius: 2px; min-width: 1px; }
    .mono { font-family: ui-monospace, monospace; font-size: 12px; }
    .muted { color: var(--muted); }
    [data-field="page.state"].live { color: var(--ok); }
    [data-field="page.state"].down { color: var(--bad); }
    #bins-section, #peers-section { grid-column: 1 / -1; }
    td.saturated { color: var(--ok); }
    </style>
    </head>
    <body>
    <header>
      <h1>Shoal node</h1>
      <span class="mono" data-field="overlay" title="overlay address">–</span>
      <span>state: <span data-field="page.state">loading</span></span>
      <span class="muted">updated <span data-field="page.updated">never</span>, <span data-field="page.polls">0</span> refreshes, <span data-field="page.failures">0</span> failed in a row</span>
      <span class="muted" data-field="page.error"></span>
    </header>
    <main>
      <section id="node-section">
        <h2>Node</h2>
        <dl>
          <dt>network</dt><dd data-field="networkID">–</dd>
          <dt>listening on</dt><dd data-field="listenAddress">–</dd>
          <dt>depth</dt><dd id="row-depth" data-field="depth">–</dd>
          <dt>storage radius</dt><dd data-field="storageRadius">–</dd>
          <dt>store epoch</dt><dd data-field="epoch">–</dd>
        </dl>
      </section>
      <section id="store-section">
        <h2>Store and sync</h2>
        <dl>
          <dt>chunks stored</dt><dd data-field="chunks">–</dd>
          <dt id="row-bytes-label" hidden>bytes stored</dt><dd id="row-bytes" data-field="bytes" hidden>–</dd>
          <dt>chunks received</dt><dd data-field="chunksReceived">–</dd>
          <dt>chunks served</dt><dd data-field="chunksServed">–</dd>
          <dt>received, already held</dt><dd data-field="chunksDuplicate">–</dd>
        </dl>
      </section>
      <section id="connections-section">
        <h2>Connections</h2>
        <dl>
          <dt>peers</dt><dd data-field="peers">–</dd>
          <dt>outbound</dt><dd data-field="connections.outbound">–</dd>
          <dt>inbound open</dt><dd data-field="connections.inbound.open.inbound">–</dd>
          <dt>in handshake</dt><dd data-field="connections.inbound.open.handshaking">–</dd>
          <dt>inbound admitted</dt><dd data-field="connections.inbound.counters.admitted">–</dd>
          <dt>inbound refused</dt><dd data-field="connections.inbound.counters.refused.total">–</dd>
        </dl>
      </section>
      <section id="topology-section">
        <h2>Topology: <span data-field="topology.connected">0</span> connected, <span data-field="topology.known">0</span> known, <span data-field="topology.dialling">0</span> dialling</h2>
        <table>
          <thead><tr><th class="num">bin</th><th class="num">known</th><th class="num">connected</th><th>saturated</th></tr></thead>
          <tbody id="topology-body"><tr><td colspan="4" class="muted">no peer known</td></tr></tbody>
        </table>
      </section>
      <section id="uploads" hidden>
        <h2>Uploads (<span data-field="tags.inProgress">0</span> in progress)</h2>
        <table>
          <thead><tr><th>tag</th><th class="num">chunks split</th><th class="num">stored</th><th class="num">bytes</th><th>state</th></tr></thead>
          <tbody id="tags-body"></tbody>
        </table>
      </section>
      <section id="peers-section">
        <h2>Peers (<span data-field="peers.count">0</span>) and their sync</h2>
        <table>
          <thead><tr><th>overlay</th><th>address</th><th>direction</th><th class="num">bins history synced</th><th class="num">chunks delivered</th><th class="num">bin IDs sealed</th><th class="num">faults</th><th></th></tr></thead>
          <tbody id="peers-body"><tr><td colspan="8" class="muted">no peers</td></tr></tbody>
        </table>
      </section>
      <section id="bins-section">
        <h2>Bins: chunks per proximity order</h2>
        <table>
          <thead><tr><th class="num">bin</th><th class="num">chunks</th><th class="num">cursor</th><th style="width:60%"></th></tr></thead>
          <tbody id="bins-body"></tbody>
        </table>
      </section>
    </main>
    <script>
    'use strict';
    (() => {
      const POLL_MS = 2000, TIMEOUT_MS = 1500, BACKOFF_MAX_MS = 30000, TAGS_SHOWN_MAX = 20;
      let failures = 0, polls = 0, tagsAnswer = true;

      const field = (name, root) => (root || document).querySelector('[data-field="' + CSS.escape(name) + '"]');
      const set = (name, value) => { const e = field(name); if (e) e.textContent = value === undefined || value === null ? '–' : String(value); };
      const show = (id, visible) => { const e = document.getElementById(id); if (e) e.hidden = !visible; };
      const cell = (name, value, cls) => {
        const td = document.createElement('td');
        if (name) td.dataset.field = name;
        if (cls) td.className = cls;
        td.textContent = value === undefined || value === null ? '–' : String(value);
        return td;
      };

      // A table's only row when it has nothing to show.
      const emptyRow = (text, columns) => {
        const row = document.createElement('tr');
        const td = cell(null, text, 'muted');
        td.colSpan = columns;
        row.appendChild(td);
        return row;
      };

      async function getJSON(path) {
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
        try {
          const response = await fetch(path, { cache: 'no-store', signal: abort.signal, headers: { Accept: 'application/json' } });
          if (!response.ok) { const error = new Error(path + ': HTTP ' + response.status); error.status = response.status; throw error; }
          return await response.json();
        } finally {
          clearTimeout(timer);
        }
      }

      function renderStatus(s) {
        for (const key of ['overlay', 'networkID', 'listenAddress', 'storageRadius', 'epoch', 'chunks',
                           'chunksReceived', 'chunksServed', 'chunksDuplicate', 'peers']) set(key, s[key]);
        set('depth', s.depth);
        const hasBytes = typeof s.bytes === 'number';
        show('row-bytes', hasBytes); show('row-bytes-label', hasBytes);
        if (hasBytes) set('bytes', s.bytes);
        const c = s.connections || {};
        set('connections.outbound', c.outbound);
        const inbound = c.inbound;
        set('connections.inbound.open.inbound', inbound ? inbound.open.inbound : null);
        set('connections.inbound.open.handshaking', inbound ? inbound.open.handshaking : null);
        set('connections.inbound.counters.admitted', inbound ? inbound.counters.admitted : null);
        set('connections.inbound.counters.refused.total',
            inbound ? Object.values(inbound.counters.refused || {}).reduce((a, b) => a + b, 0) : null);
        renderBins(Array.isArray(s.bins) ? s.bins : []);
      }

      function renderBins(bins) {
        const body = document.getElementById('bins-body');
        const most = Math.max(1, ...bins.map(b => b.chunks));
        for (const b of bins) {
          let row = body.querySelector('tr[data-bin="' + b.bin + '"]');
          if (!row) {
            row = document.createElement('tr');
            row.dataset.bin = String(b.bin);
            const bar = document.createElement('td');
            bar.appendChild(document.createElement('div')).className = 'bar';
            row.append(cell(null, b.bin, 'num'), cell('bins.' + b.bin + '.chunks', 0, 'num'), cell('bins.' + b.bin + '.cursor', 0, 'num'), bar);
            body.appendChild(row);
          }
          field('bins.' + b.bin + '.chunks', row).textContent = String(b.chunks);
          field('bins.' + b.bin + '.cursor', row).textContent = String(b.cursor);
          row.querySelector('.bar').style.width = (100 * b.chunks / most).toFixed(1) + '%';
        }
      }

      function renderPeers(peers) {
        set('peers.count', peers.length);
        const body = document.getElementById('peers-body');
        const rows = peers.map(p => {
          const bins = Array.isArray(p.bins) ? p.bins : [];
          const done = bins.filter(b => b.historyDone).length;
          const sum = key => bins.reduce((a, b) => a + (b[key] || 0), 0);
          const row = document.createElement('tr');
          row.dataset.peer = p.overlay;
          const overlay = cell('peer.' + p.overlay + '.overlay', p.overlay.slice(0, 16) + '…', 'mono');
          overlay.title = p.overlay;
          const progress = document.createElement('td');
          progress.style.width = '20%';
          progress.appendChild(document.createElement('div')).className = 'bar';
          progress.firstChild.style.width = (bins.length ? 100 * done / bins.length : 0).toFixed(1) + '%';
          row.append(overlay,
                     cell('peer.' + p.overlay + '.address', p.address, 'mono'),
                     cell('peer.' + p.overlay + '.direction', p.outbound ? 'outbound' : 'inbound'),
                     cell('peer.' + p.overlay + '.historySynced', done + '/' + bins.length, 'num'),
                     cell('peer.' + p.overlay + '.delivered', sum('delivered'), 'num'),
                     cell('peer.' + p.overlay + '.sealed', sum('sealed'), 'num'),
                     cell('peer.' + p.overlay + '.faults', p.faults, 'num'),
                     progress);
          return row;
        });
        body.replaceChildren(...(rows.length ? rows : [emptyRow('no peers', 8)]));
      }

      // Only the bins that hold a known peer: a node's table is mostly empty bins.
      function renderTopology(t) {
        for (const key of ['connected', 'known', 'dialling']) set('topology.' + key, t[key]);
        const bins = (Array.isArray(t.bins) ? t.bins : []).filter(b => b.known > 0 || b.connected > 0);
        const rows = bins.map(b => {
          const row = document.createElement('tr');
          row.dataset.topologyBin = String(b.bin);
          const name = 'topology.bins.' + b.bin + '.';
          row.append(cell(null, b.bin, 'num'), cell(name + 'known', b.known, 'num'), cell(name + 'connected', b.connected, 'num'),
                     cell(name + 'saturated', b.saturated ? 'yes' : 'no', b.saturated ? 'saturated' : null));
          return row;
        });
        document.getElementById('topology-body').replaceChildren(...(rows.length ? rows : [emptyRow('no peer known', 4)]));
      }

      function renderTags(answer) {
        const tags = Array.isArray(answer.tags) ? answer.tags.slice() : [];
        tags.sort((a, b) => b.uid - a.uid);
        set('tags.inProgress', tags.filter(t => !t.done && !t.failed).length);
        const rows = tags.slice(0, TAGS_SHOWN_MAX).map(t => {
          const row = document.createElement('tr');
          row.dataset.tag = String(t.uid);
          const state = t.failed ? 'failed: ' + t.failed : (t.done ? 'done' : 'uploading');
          row.append(cell('tag.' + t.uid + '.uid', t.uid), cell('tag.' + t.uid + '.split', t.split, 'num'),
                     cell('tag.' + t.uid + '.stored', t.stored, 'num'), cell('tag.' + t.uid + '.bytes', t.bytes, 'num'),
                     cell('tag.' + t.uid + '.state', state));
          return row;
        });
        document.getElementById('tags-body').replaceChildren(...rows);
        show('uploads', true);
      }

      async function pollTags() {
        if (!tagsAnswer) return;
        try {
          renderTags(await getJSON('/tags'));
        } catch (error) {
          // No upload progress on this node: hide the section and stop asking.
          if (error.status === 404) { tagsAnswer = false; show('uploads', false); }
        }
      }

      async function poll() {
        const state = field('page.state');
        try {
          const [status, peers, topology] = await Promise.all([getJSON('/status'), getJSON('/peers'), getJSON('/topology')]);
          renderStatus(status);
          renderPeers(Array.isArray(peers) ? peers : []);
          renderTopology(topology || {});
          await pollTags();
          failures = 0;
          set('page.failures', 0);
          polls += 1;
          set('page.polls', polls);
          set('page.updated', new Date().toLocaleTimeString());
          set('page.error', '');
          state.textContent = 'live';
          state.className = 'live';
        } catch (error) {
          failures += 1;
          set('page.failures', failures);
          state.textContent = 'unreachable';
          state.className = 'down';
          set('page.error', String(error && error.message || error));
        }
        const delay = failures === 0 ? POLL_MS : Math.min(BACKOFF_MAX_MS, POLL_MS * 2 ** Math.min(failures, 4));
        setTimeout(poll, delay);
      }

      poll();
    })();
    </script>
    </body>
    </html>
    """#
}
