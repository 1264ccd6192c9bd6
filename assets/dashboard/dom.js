// Building DOM without innerHTML: every value becomes a text node, so what
// other people typed (messages, emails) can never run as markup.

/** h('button', { type: 'button', class: 'x', onclick: fn }, 'text', child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

let ids = 0;
/** A labelled form control: label text, then the control (name, type, …). */
export function field(label, attrs, control = 'input') {
  const id = `f${++ids}`;
  const input = h(control, { id, ...attrs });
  const error = h('span', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite' });
  input.setAttribute('aria-describedby', error.id);
  return h('label', { for: id }, label, input, error);
}

/** A checkbox with its label after it. */
export function checkbox(label, attrs) {
  const id = `f${++ids}`;
  return h('label', { class: 'check', for: id }, h('input', { id, type: 'checkbox', ...attrs }), label);
}

export function formatDate(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function time(value) {
  return h('time', { datetime: value }, formatDate(value));
}

/** A table from column titles and rows of cells. */
export function table(columns, rows, empty = 'Nothing yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c)))))));
}

/**
 * Run `action(values)` when `form` is submitted: clears earlier errors,
 * disables its buttons meanwhile, shows a failure at the input named by
 * the error's field (else in the form's message line), and `done(result)`
 * on success. Errors show their code and message (`extensions.code`).
 */
export function onSubmit(form, action, done = () => {}) {
  const message = h('p', { class: 'form-message', role: 'status' });
  form.append(message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    message.textContent = '';
    message.className = 'form-message';
    const buttons = [...form.querySelectorAll('button')];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const values = Object.fromEntries(new FormData(form).entries());
      const result = await action(values, event.submitter);
      done(result, message);
    } catch (error) {
      showError(form, message, error);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return form;
}

/** Show `error` at its field when the form has one by that name. */
export function showError(form, message, error) {
  const text = describeError(error);
  const input = error.field && form && [...form.elements].find((el) => el.name === error.field);
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    const slot = document.getElementById(`${input.id}-error`);
    if (slot) slot.textContent = text;
    input.focus();
  } else {
    message.textContent = text;
    message.className = 'form-message error';
  }
}

export function describeError(error) {
  return error && error.code ? `${error.code}: ${error.message}` : String(error && error.message || error);
}

/** A button that runs `action`, showing a failure next to it. */
export function actionButton(label, action, attrs = {}) {
  const note = h('span', { class: 'error', role: 'status' });
  const button = h('button', { type: 'button', ...attrs, onclick: async () => {
    note.textContent = '';
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      note.textContent = describeError(error);
    } finally {
      button.disabled = false;
    }
  } }, label);
  return h('span', { class: 'actions' }, button, note);
}
