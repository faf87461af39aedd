'use strict';

// The audit page: records the user may read (the API decides which), the latest signed
// checkpoint, and each record's inclusion in it verified here, in the browser: the leaf is the
// SHA-256 of 0x00 and the record's exact bytes, the path is folded as RFC 9162 §2.1.3.2 says,
// and the result must equal the checkpoint's root.
(function () {
  const root = document.getElementById('audit');
  if (!root) return;
  const status = document.getElementById('audit-status');
  const body = document.getElementById('records');
  const tenant = document.getElementById('audit-tenant');
  const text = document.getElementById('audit-text');
  let checkpoint = null;

  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const join = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

  async function included(raw, index, size, rootHash, proof) {
    let r = await sha256(join(new Uint8Array([0]), raw));
    let fn = index;
    let sn = size - 1;
    for (const p of proof) {
      if (sn === 0) return false;
      if ((fn & 1) === 1 || fn === sn) {
        r = await sha256(join(new Uint8Array([1]), p, r));
        while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
      } else {
        r = await sha256(join(new Uint8Array([1]), r, p));
      }
      fn >>= 1;
      sn >>= 1;
    }
    return sn === 0 && same(r, rootHash);
  }

  async function verify(item, cell) {
    cell.textContent = 'verifying…';
    try {
      const r = await fetch(`/v1/audit/proof/inclusion?index=${item.index}&tree_size=${checkpoint.size}`);
      if (!r.ok) throw new Error('the proof could not be fetched (' + r.status + ')');
      const proof = await r.json();
      const ok = await included(fromB64(item.raw), item.index, checkpoint.size, checkpoint.root, proof.proof.map(fromB64));
      cell.textContent = ok
        ? `✓ verified: record ${item.index} is in the checkpoint of ${checkpoint.size}`
        : `✗ does not verify: record ${item.index} is not proven in the checkpoint`;
      cell.className = 'verdict ' + (ok ? 'pass' : 'fail');
    } catch (e) {
      cell.textContent = '✗ ' + e.message;
      cell.className = 'verdict fail';
    }
  }

  const { cell, api } = window.Enclave;
  // Who each key id is: a person's calls carry their user id; keys may belong to a user.
  const names = new Map();
  async function learnNames() {
    // Auditors read every tenant; admins their own.
    const scope = root.dataset.scope ? '?tenant=' + encodeURIComponent(root.dataset.scope) : '';
    try {
      for (const u of (await api('GET', '/v1/admin/users' + scope)).data) names.set(u.id, u.name);
      for (const k of (await api('GET', '/v1/admin/keys' + scope)).data) names.set(k.id, k.user || k.name || '');
    } catch (e) {
      status.textContent = 'Callers are shown by key id: ' + e.message;
    }
  }

  // The filters: user or key, outcome, label, time, and any text; all must match.
  function matches(rec) {
    const value = (id) => document.getElementById(id).value.trim();
    const user = value('audit-user').toLowerCase();
    if (user && ![rec.key_id, names.get(rec.key_id)].some((v) => v && String(v).toLowerCase().includes(user))) return false;
    const outcome = value('audit-outcome');
    if (outcome === 'allowed' && !(rec.status < 400)) return false;
    if (outcome === 'refused' && !(rec.status >= 400)) return false;
    const labelled = value('audit-label').toUpperCase();
    if (labelled && ![rec.request_label, rec.answer_label].some((l) => l && l.toUpperCase().includes(labelled))) return false;
    const at = Date.parse(rec.time);
    const since = value('audit-since');
    if (since && !(at >= Date.parse(since))) return false;
    const until = value('audit-until');
    if (until && !(at <= Date.parse(until))) return false;
    const wanted = text.value.trim().toLowerCase();
    return !wanted || JSON.stringify(rec).toLowerCase().includes(wanted);
  }

  async function load() {
    status.textContent = 'Loading…';
    const cp = await fetch('/v1/audit/checkpoint');
    if (!cp.ok) {
      const e = await cp.json().catch(() => ({}));
      status.textContent = (e.error && e.error.message) || ('the checkpoint: ' + cp.status);
      return;
    }
    const note = await cp.text();
    const lines = note.split('\n');
    checkpoint = { size: Number(lines[1]), root: fromB64(lines[2]) };
    document.getElementById('checkpoint').textContent = note;
    const q = new URLSearchParams({ raw: 'true', limit: '200', to: String(checkpoint.size), from: String(Math.max(0, checkpoint.size - 200)) });
    if (tenant.value.trim()) q.set('tenant', tenant.value.trim());
    const r = await fetch('/v1/audit/records?' + q.toString());
    const list = await r.json();
    if (!r.ok) {
      status.textContent = (list.error && list.error.message) || ('the records: ' + r.status);
      return;
    }
    const items = list.data.filter((i) => matches(i.record)).reverse();
    body.replaceChildren();
    for (const item of items) {
      const rec = item.record;
      const row = document.createElement('tr');
      row.dataset.index = String(item.index);
      cell(row, item.index);
      cell(row, rec.time);
      cell(row, rec.kind + (rec.operation ? ' ' + rec.operation : ''));
      cell(row, rec.tenant);
      cell(row, names.get(rec.key_id) ? `${names.get(rec.key_id)} (${rec.key_id})` : rec.key_id);
      cell(row, rec.status + (rec.code ? ' ' + rec.code : ''));
      // The label a call carried, as a name: records hold no content (hashes and counts), so
      // the page's banner does not rise with them.
      cell(row, rec.answer_label || rec.request_label || '');
      const verdict = document.createElement('td');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Verify';
      button.className = 'verify';
      button.addEventListener('click', () => verify(item, verdict));
      verdict.append(button);
      row.append(verdict);
      body.append(row);
    }
    status.textContent = `${items.length} record(s) of ${list.tree_size}`;
  }

  document.getElementById('audit-filter').addEventListener('submit', (e) => { e.preventDefault(); load(); });
  learnNames().finally(load);
})();
