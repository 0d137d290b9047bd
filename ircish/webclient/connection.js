// The WebSocket to the server (IRCv3 WebSocket, text.ircv3.net: one IRC line per message)
// and everything up to a registered session: CAP negotiation, SASL PLAIN, REGISTER before
// connect (draft/account-registration), PING, and reconnecting with backoff when the
// socket closes for any reason but the person's own /quit or a refused login.

import { base64, format, parse } from "./irc.js";

/** The capabilities the page uses, when the server offers them. */
const WANTED_CAPS = [
  "account-notify", "account-tag", "away-notify", "batch", "cap-notify",
  "draft/account-registration", "draft/chathistory", "draft/event-playback",
  "echo-message", "extended-join", "invite-notify", "labeled-response", "message-tags",
  "multi-prefix", "sasl", "server-time", "setname", "userhost-in-names",
];
const FIRST_RETRY_MS = 1000;
const LAST_RETRY_MS = 30000;
/** SASL sends base64 in pieces of 400 bytes (IRCv3 sasl-3.1). */
const SASL_CHUNK = 400;

export class LoginError extends Error {
  /** `nickTaken`: the nick someone else has (the form offers another). */
  constructor(message, nickTaken = null) {
    super(message);
    this.nickTaken = nickTaken;
  }
}

/**
 * `listener` is told: `state(name, detail)` with name connecting | registering |
 * connected | reconnecting (detail: ms until the next try) | closed;
 * `registered(nick, firstTime)`; `line(message)` for every line after registration
 * (and notices before it); `loggedIn(account or null)`; `failed(LoginError)` when a login is refused
 * (no more tries).
 */
export class Connection {
  constructor(url, listener) {
    this.url = url;
    this.listener = listener;
    this.socket = null;
    this.login = null;
    this.caps = new Set();
    this.offered = new Map();
    this.isupport = {};
    this.nick = "";
    this.registered = false;
    this.everRegistered = false;
    this.stopped = true;
    this.retries = 0;
    this.retryTimer = null;
    this.labels = 0;
  }

  /** Log in with `{nick, password, register, email}` (password and the rest optional). */
  start(login) {
    this.login = { ...login };
    this.stopped = false;
    this.everRegistered = false;
    this.retries = 0;
    this.open();
  }

  /** The person quit (or left the page): close, and no reconnect. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
  }

  /** Send one line; false when there is no connection to send it on. */
  send(command, params = [], tags = {}) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    const usable = {};
    for (const [key, value] of Object.entries(tags)) {
      // Tags only once message-tags is on (label: labeled-response).
      if (key === "label" ? this.caps.has("labeled-response") : this.caps.has("message-tags")) {
        usable[key] = value;
      }
    }
    this.socket.send(format(command, params, usable));
    return true;
  }

  /** A new label for labeled-response, or null when the server has none. */
  newLabel() {
    return this.caps.has("labeled-response") ? `w${++this.labels}` : null;
  }

  get connected() {
    return this.registered && this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  open() {
    clearTimeout(this.retryTimer);
    this.registered = false;
    this.caps = new Set();
    this.offered = new Map();
    this.listener.state("connecting");
    const socket = new WebSocket(this.url, ["text.ircv3.net"]);
    this.socket = socket;
    socket.onopen = () => {
      if (socket === this.socket) this.hello();
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === "string") this.receive(parse(event.data));
    };
    socket.onclose = () => {
      if (socket === this.socket) this.closed();
    };
  }

  hello() {
    this.listener.state("registering");
    this.nick = this.login.nick;
    this.raw("CAP", ["LS", "302"]);
    this.raw("NICK", [this.nick]);
    this.raw("USER", [this.nick.replace(/[^A-Za-z0-9]/g, "").slice(0, 10) || "web", "0", "*", this.nick]);
  }

  raw(command, params) {
    this.socket.send(format(command, params));
  }

  closed() {
    this.registered = false;
    if (this.stopped) {
      this.listener.state("closed");
      return;
    }
    const delay = Math.min(FIRST_RETRY_MS * 2 ** this.retries, LAST_RETRY_MS);
    this.retries++;
    this.listener.state("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** A login that cannot work by trying again: tell the page and stop. */
  fail(message, nickTaken = null) {
    this.stopped = true;
    this.listener.failed(new LoginError(message, nickTaken));
    this.socket.close(1000);
  }

  receive(msg) {
    if (msg.command === "PING") {
      this.raw("PONG", msg.params);
      return;
    }
    if (!this.registered && this.register(msg)) return;
    if (msg.command === "900") this.listener.loggedIn(msg.params[2]);
    else if (msg.command === "901") this.listener.loggedIn(null);
    else if (msg.command === "CAP") this.capChange(msg);
    if (msg.command === "005") {
      for (const token of msg.params.slice(1, -1)) {
        const [key, ...value] = token.split("=");
        this.isupport[key] = value.join("=");
      }
    }
    if (msg.command === "NICK" && msg.nick === this.nick) this.nick = msg.params[0];
    this.listener.line(msg);
  }

  /** The lines of registration; true when the line was one (and is dealt with). */
  register(msg) {
    const params = msg.params;
    switch (msg.command) {
      case "CAP":
        return this.negotiate(msg);
      case "AUTHENTICATE":
        if (params[0] === "+") this.authenticate();
        return true;
      case "903":
        this.raw("CAP", ["END"]);
        return true;
      case "904":
      case "905":
      case "906":
        this.fail(`Login failed: wrong password for ${this.login.nick}, or no such account.`);
        return true;
      case "908":
        return true;
      case "REGISTER":
        // REGISTER SUCCESS <account> :text. From now on this account logs in by SASL.
        this.login.register = false;
        this.raw("CAP", ["END"]);
        return true;
      case "FAIL":
        if (params[0] === "REGISTER") {
          this.fail(`Registration failed: ${params[params.length - 1]} (${params[1]})`);
          return true;
        }
        return false;
      case "433":
        if (this.everRegistered) {
          // Back after a drop, and the old connection still holds the nick.
          this.nick += "_";
          this.raw("NICK", [this.nick]);
        } else {
          this.fail(`The nick ${params[1]} is taken.`, params[1]);
        }
        return true;
      case "432":
        this.fail(`${params[1]} cannot be a nick: ${params[params.length - 1]}`);
        return true;
      case "465":
      case "ERROR":
        if (!this.everRegistered) this.fail(params[params.length - 1]);
        return true;
      case "001":
        this.registered = true;
        this.nick = params[0];
        this.retries = 0;
        this.listener.state("connected");
        this.listener.registered(this.nick, !this.everRegistered);
        this.everRegistered = true;
        return false;
      default:
        return false;
    }
  }

  /** CAP LS (possibly in several lines), then REQ, then ACK: on to login. */
  negotiate(msg) {
    const [, sub, ...rest] = msg.params;
    if (sub === "LS") {
      const more = rest[0] === "*";
      for (const item of rest[rest.length - 1].split(" ")) {
        if (!item) continue;
        const [name, ...value] = item.split("=");
        this.offered.set(name, value.join("="));
      }
      if (more) return true;
      const wanted = WANTED_CAPS.filter((cap) => this.offered.has(cap));
      if (wanted.length) this.raw("CAP", ["REQ", wanted.join(" ")]);
      else this.loginStep();
    } else if (sub === "ACK") {
      for (const cap of rest[rest.length - 1].split(" ")) if (cap) this.caps.add(cap);
      this.loginStep();
    } else if (sub === "NAK") {
      this.loginStep();
    }
    return true;
  }

  loginStep() {
    const { password, register, email } = this.login;
    if (register) {
      if (!this.caps.has("draft/account-registration")) {
        this.fail("This server does not take registrations before connecting.");
        return;
      }
      this.raw("REGISTER", [this.nick, email || "*", password || ""]);
    } else if (password) {
      if (!this.caps.has("sasl")) {
        this.fail("This server does not offer logins (SASL).");
        return;
      }
      this.raw("AUTHENTICATE", ["PLAIN"]);
    } else {
      this.raw("CAP", ["END"]);
    }
  }

  authenticate() {
    const { nick, password } = this.login;
    const encoded = base64(`\0${nick}\0${password}`);
    for (let i = 0; i < encoded.length; i += SASL_CHUNK) {
      this.raw("AUTHENTICATE", [encoded.slice(i, i + SASL_CHUNK)]);
    }
    if (encoded.length % SASL_CHUNK === 0) this.raw("AUTHENTICATE", ["+"]);
  }

  /** cap-notify after registration: CAP NEW / DEL. */
  capChange(msg) {
    const [, sub, list = ""] = msg.params;
    const names = list.split(" ").filter(Boolean).map((item) => item.split("=")[0]);
    if (sub === "DEL") for (const name of names) this.caps.delete(name);
    if (sub === "NEW") {
      const wanted = names.filter((name) => WANTED_CAPS.includes(name) && name !== "sasl");
      if (wanted.length) this.raw("CAP", ["REQ", wanted.join(" ")]);
    }
    if (sub === "ACK") for (const name of list.split(" ")) if (name) this.caps.add(name);
  }
}
