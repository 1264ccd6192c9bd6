// Signing in and up, and the reminder to verify an address.
import { gql } from '../api.js';
import { actionButton, field, h, mount, onSubmit } from '../dom.js';

export const ME = `{ me { id email emailVerified role
  claimSettings { requireManualApproval allowOverrideAssignee notifyOnClaim allowAssigneeOrganization } } }`;

export function signInView(container, { message, signedIn }) {
  const signIn = onSubmit(
    h('form', { id: 'sign-in', 'aria-labelledby': 'sign-in-title' },
      h('h2', { id: 'sign-in-title' }, 'Sign in'),
      field('Email', { name: 'email', type: 'email', autocomplete: 'username', required: true }),
      field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
      h('button', { type: 'submit' }, 'Sign in')),
    async ({ email, password }) => {
      const data = await gql('mutation($e: String!, $p: String!) { signIn(email: $e, password: $p) { token } }',
        { e: email, p: password });
      await signedIn(data.signIn.token);
    },
  );
  const signUp = onSubmit(
    h('form', { id: 'sign-up', 'aria-labelledby': 'sign-up-title' },
      h('h2', { id: 'sign-up-title' }, 'Create an account'),
      field('Email', { name: 'email', type: 'email', autocomplete: 'email', required: true }),
      field('Password (10 to 128 characters)', {
        name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 10, maxlength: 128,
      }),
      h('button', { type: 'submit' }, 'Sign up')),
    async ({ email, password }) => {
      await gql('mutation($e: String!, $p: String!) { signUp(email: $e, password: $p) { account { id } } }',
        { e: email, p: password });
      return email;
    },
    (email, note) => {
      note.className = 'form-message ok';
      note.textContent = `Check your email: we sent a link to ${email} to confirm the address. Then sign in.`;
    },
  );
  mount(container,
    h('h1', {}, 'Your licenses'),
    message ? h('p', { role: 'status' }, message) : null,
    h('div', { class: 'grid2' }, h('section', {}, signIn), h('section', {}, signUp)));
}

/** A reminder, with a resend button, while the address is unverified. */
export function verifyBanner(me) {
  if (!me || me.emailVerified) return null;
  return h('section', { class: 'card', role: 'note' },
    h('p', {}, `Your address ${me.email} is not verified yet: open the link we emailed you. `,
      'Keys assigned to it, requests and transfers appear once it is.'),
    actionButton('Send the link again', async () => {
      await gql('mutation { resendVerificationEmail }');
    }, { class: 'secondary' }));
}
