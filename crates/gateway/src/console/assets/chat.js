// The chat page: kept conversations, streamed answers, knowledge-base citations; the banner
// rises with the conversation.
'use strict';

(function () {
  const { csrf, label, raise } = window.Enclave;
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
  let controller = null;
  // The open conversation's portion mark in the list, which rises with the banner.
  let listed = list.querySelector('a[aria-current] .portion');
  window.Enclave.onRaise((info) => { if (listed) listed.textContent = info.portion; });
  const high = () => window.Enclave.high();

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

  // A new conversation is made while its first message is being written, so that sending it
  // waits for nothing, and listed when that message is sent (the list leaves out conversations
  // with no message).
  let making = null;
  function make() {
    if (conversation) return Promise.resolve(conversation);
    if (!making) {
      making = fetch('/v1/conversations', { method: 'POST', headers: { 'Enclave-CSRF': csrf } }).then(async (r) => {
        const body = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error((body.error && body.error.message) || ('the server answered ' + r.status));
        return body.id;
      });
      making.catch(() => { making = null; });
    }
    return making;
  }
  prompt.addEventListener('input', () => { make().catch(() => {}); });

  function listNew(id, title, portion) {
    conversation = id;
    window.history.replaceState(null, '', '/console?c=' + encodeURIComponent(conversation));
    exportLink.href = '/v1/conversations/' + encodeURIComponent(conversation) + '/export';
    tools.hidden = false;
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = '/console?c=' + encodeURIComponent(conversation);
    a.setAttribute('aria-current', 'page');
    listed = document.createElement('span');
    listed.className = 'portion';
    listed.textContent = portion;
    a.append(listed, ' ' + title.replace(/\s+/g, ' ').slice(0, 80));
    li.append(a);
    for (const other of list.querySelectorAll('a[aria-current]')) other.removeAttribute('aria-current');
    list.prepend(li);
  }

  // The working label joined with the conversation's, asked ahead so a send need not wait.
  const ahead = () => { label([working.value, high()]).catch(() => {}); };
  working.addEventListener('change', ahead);
  window.Enclave.onRaise(ahead);
  ahead();

  async function ask(text) {
    // Marks for the browser's own performance timeline: from the send to the first token shown.
    performance.clearMarks('enclave:first-token');
    performance.mark('enclave:ask');
    // The request is declared at the working label joined with everything the conversation
    // has reached; the server holds it there too, so a conversation never drops below its
    // highest label.
    // Both are usually ready: asked ahead, and made while the message was written.
    const made = make();
    made.catch(() => {});
    const declared = await label([working.value, high()]);
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
      const id = await made;
      if (!conversation) listNew(id, text, declared.portion);
      const grounded = Array.from(form.querySelectorAll('input[name="kb"]:checked')).map((i) => i.value);
      const request = { model: model.value, messages: history, stream: true, max_tokens: Number(maxTokens.value) || 512 };
      if (grounded.length) request.metadata = { knowledge_bases: grounded.join(',') };
      performance.mark('enclave:request');
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
      user.li.dataset.label = asked;
      // Marks and banners are brought up to date beside the stream, not before it: the first
      // token is shown as soon as it arrives.
      const pending = [];
      // Awaited before the answer is done; a stopped answer leaves them to settle quietly.
      const track = (p) => { p.catch(() => {}); pending.push(p); };
      track(label([asked]).then((info) => { user.mark.textContent = info.portion + ' '; }));
      track(raise(asked));
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
              if (!content) {
                answer.body.textContent = delta.content;
                performance.mark('enclave:first-token');
              }
              content += delta.content;
              answer.body.textContent = content;
            }
            if (chunk.enclave && chunk.enclave.label) reached = chunk.enclave.label;
            if (!cited && chunk.enclave && chunk.enclave.citations && chunk.enclave.citations.length) {
              cited = true;
              for (const c of chunk.enclave.citations) track(raise(c.label));
              track(cite(answer.li, chunk.enclave.citations));
            }
          }
        }
      }
      await Promise.all(pending);
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

