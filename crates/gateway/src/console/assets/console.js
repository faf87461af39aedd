// Enclave console: the chat page's partial updates. Every call is an API call under the signed-in
// user's session; labels, banners and portion marks come from the server's label code
// (`/console/label`), never from this script. Text is written with textContent only.
'use strict';

(function () {
  const csrf = document.querySelector('meta[name="enclave-csrf"]').content;
  const form = document.getElementById('chat');
  if (!form) return;
  const messages = document.getElementById('messages');
  const prompt = document.getElementById('prompt');
  const model = document.getElementById('model');
  const working = document.getElementById('label');
  const maxTokens = document.getElementById('max-tokens');
  const send = document.getElementById('send');
  const stop = document.getElementById('stop');
  const status = document.getElementById('status');
  const tools = document.getElementById('tools');
  const exportLink = document.getElementById('export');
  const list = document.getElementById('conversation-list');
  // The kept conversation this page continues; made at the first message of a new one.
  let conversation = document.getElementById('conversation').dataset.conversation || null;
  // The conversation so far, as the server rendered it.
  const history = [];
  for (const li of messages.querySelectorAll('li.message[data-role]')) {
    history.push({ role: li.dataset.role, content: li.querySelector('.text').textContent });
  }
  let high = document.getElementById('banner-top').dataset.label;
  let controller = null;
  // The open conversation's portion mark in the list, which rises with the banner.
  let listed = list.querySelector('a[aria-current] .portion');

  // The join of `labels`, its banner, portion mark and banner class, from the server.
  async function label(labels) {
    const q = new URLSearchParams();
    for (const l of labels) if (l) q.append('l', l);
    const r = await fetch('/console/label?' + q.toString(), { headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error('the label service answered ' + r.status);
    return r.json();
  }

  // The page's banners show the conversation's high-water mark; it only ever rises.
  async function raise(to) {
    const info = await label([high, to]);
    high = info.banner;
    for (const id of ['banner-top', 'banner-bottom']) {
      const b = document.getElementById(id);
      b.textContent = info.banner;
      b.dataset.label = info.banner;
      b.className = 'banner ' + (id === 'banner-top' ? 'top' : 'bottom') + ' ' + info.class;
    }
    document.body.dataset.label = info.banner;
    if (listed) listed.textContent = info.portion;
  }

  function message(role, portion, text) {
    const li = document.createElement('li');
    li.className = 'message ' + role;
    li.dataset.role = role;
    const mark = document.createElement('span');
    mark.className = 'portion';
    mark.textContent = portion + ' ';
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    li.append(mark, body);
    messages.append(li);
    return { li, mark, body };
  }

  // The passages an answer is grounded in, numbered as the model cites them, each with its
  // portion mark and document.
  async function cite(li, citations) {
    const ol = document.createElement('ol');
    ol.className = 'citations';
    ol.setAttribute('aria-label', 'Sources');
    for (const c of citations) {
      const item = document.createElement('li');
      item.dataset.label = c.label;
      const parts = [
        ['cite-index', '[' + c.index + ']'],
        ['portion', (await label([c.label])).portion],
        ['cite-doc', c.document_name + (c.page ? ', p. ' + c.page : '')],
        ['cite-text', c.text],
      ];
      for (const [cls, text] of parts) {
        const span = document.createElement('span');
        span.className = cls;
        span.textContent = text;
        item.append(span, ' ');
      }
      ol.append(item);
    }
    li.append(ol);
  }

  function headerLabel(r) {
    const v = r.headers.get('Enclave-Label');
    if (!v) return null;
    try { return decodeURIComponent(v); } catch (e) { return v; }
  }

  // A new conversation is made (and listed) when its first message is sent.
  async function ensureConversation(title) {
    if (conversation) return conversation;
    const r = await fetch('/v1/conversations', { method: 'POST', headers: { 'Enclave-CSRF': csrf } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && body.error.message) || ('the server answered ' + r.status));
    conversation = body.id;
    window.history.replaceState(null, '', '/console?c=' + encodeURIComponent(conversation));
    exportLink.href = '/v1/conversations/' + encodeURIComponent(conversation) + '/export';
    tools.hidden = false;
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = '/console?c=' + encodeURIComponent(conversation);
    a.setAttribute('aria-current', 'page');
    listed = document.createElement('span');
    listed.className = 'portion';
    listed.textContent = (await label([high])).portion;
    a.append(listed, ' ' + title.replace(/\s+/g, ' ').slice(0, 80));
    li.append(a);
    for (const other of list.querySelectorAll('a[aria-current]')) other.removeAttribute('aria-current');
    list.prepend(li);
    return conversation;
  }

  async function ask(text) {
    // The request is declared at the working label joined with everything the conversation
    // has reached; the server holds it there too, so a conversation never drops below its
    // highest label.
    const declared = await label([working.value, high]);
    const user = message('user', declared.portion, text);
    history.push({ role: 'user', content: text });
    const answer = message('assistant', '', '');
    answer.li.setAttribute('aria-busy', 'true');
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    status.textContent = 'Answering…';
    let content = '';
    try {
      const id = await ensureConversation(text);
      const grounded = Array.from(form.querySelectorAll('input[name="kb"]:checked')).map((i) => i.value);
      const request = { model: model.value, messages: history, stream: true, max_tokens: Number(maxTokens.value) || 512 };
      if (grounded.length) request.metadata = { knowledge_bases: grounded.join(',') };
      const r = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Enclave-Label': declared.banner,
          'Enclave-CSRF': csrf,
          'Enclave-Conversation': id,
        },
        body: JSON.stringify(request),
        signal: controller.signal,
      });
      if (!r.ok) {
        const e = await r.json().catch(() => ({}));
        history.pop();
        answer.li.classList.add('error');
        answer.mark.textContent = '';
        answer.body.textContent = (e.error && e.error.message) || ('the server answered ' + r.status);
        status.textContent = (e.error && e.error.code) || '';
        return;
      }
      const asked = headerLabel(r) || declared.banner;
      user.mark.textContent = (await label([asked])).portion + ' ';
      user.li.dataset.label = asked;
      await raise(asked);
      let reached = asked;
      let cited = false;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split('\n')) {
            if (!line.startsWith('data: ')) continue;
            const data = line.slice(6);
            if (data === '[DONE]') continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || 'the answer failed');
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) {
              content += delta.content;
              answer.body.textContent = content;
            }
            if (chunk.enclave && chunk.enclave.label) reached = chunk.enclave.label;
            if (!cited && chunk.enclave && chunk.enclave.citations && chunk.enclave.citations.length) {
              cited = true;
              for (const c of chunk.enclave.citations) await raise(c.label);
              await cite(answer.li, chunk.enclave.citations);
            }
          }
        }
      }
      history.push({ role: 'assistant', content });
      answer.mark.textContent = (await label([reached])).portion + ' ';
      answer.li.dataset.label = reached;
      await raise(reached);
      answer.li.dataset.done = 'true';
      status.textContent = '';
    } catch (e) {
      if (e.name === 'AbortError') {
        answer.li.classList.add('stopped');
        history.push({ role: 'assistant', content });
        status.textContent = 'Stopped.';
      } else {
        answer.li.classList.add('error');
        answer.body.textContent = content + (content ? '\n' : '') + e.message;
        status.textContent = 'The answer failed.';
      }
    } finally {
      answer.li.removeAttribute('aria-busy');
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = '';
    ask(text);
  });
  prompt.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  stop.addEventListener('click', () => { if (controller) controller.abort(); });
  // The transcript as the server writes it (banners, portion marks), onto the clipboard.
  document.getElementById('copy').addEventListener('click', async () => {
    try {
      const r = await fetch(exportLink.href);
      if (!r.ok) throw new Error('the server answered ' + r.status);
      await navigator.clipboard.writeText(await r.text());
      status.textContent = 'Copied the conversation as Markdown.';
    } catch (e) {
      status.textContent = 'Could not copy: ' + e.message;
    }
  });
})();

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

  function cell(row, value) {
    const td = document.createElement('td');
    td.textContent = value == null ? '' : String(value);
    row.append(td);
    return td;
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
    const wanted = text.value.trim().toLowerCase();
    const items = list.data.filter((i) => !wanted || JSON.stringify(i.record).toLowerCase().includes(wanted)).reverse();
    body.replaceChildren();
    for (const item of items) {
      const rec = item.record;
      const row = document.createElement('tr');
      row.dataset.index = String(item.index);
      cell(row, item.index);
      cell(row, rec.time);
      cell(row, rec.kind + (rec.operation ? ' ' + rec.operation : ''));
      cell(row, rec.tenant);
      cell(row, rec.key_id);
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
  load();
})();
