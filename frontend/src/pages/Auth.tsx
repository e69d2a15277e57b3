// The pages before the app: first-start setup and sign-in.
import { useMutation } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useSearchParams } from "react-router-dom";
import { api } from "../lib/api";
import { safeNext } from "../lib/session";

const MIN_PASSWORD = 8;

function AuthCard({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <main id="main" className="auth-page">
      <section className="card stack auth-card" aria-labelledby="auth-title">
        <div className="brand">
          <img className="icon-inline" src="/favicon.svg" alt="" width="20" height="20" /> PlantOps
        </div>
        <h1 id="auth-title">{title}</h1>
        {children}
      </section>
    </main>
  );
}

export function Login() {
  const [params] = useSearchParams();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const login = useMutation({
    mutationFn: () => api.login(username.trim(), password),
    // A full load: every query and the live stream start over as this user.
    onSuccess: () => window.location.assign(safeNext(params.get("next"))),
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    login.mutate();
  };
  return (
    <AuthCard title="Sign in">
      <form className="stack" onSubmit={submit} aria-label="Sign in">
        <label>
          Username
          <input
            name="username"
            autoComplete="username"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            required
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
        </label>
        {login.isError && (
          <p className="field-error" role="alert">
            {login.error.message}
          </p>
        )}
        <button type="submit" disabled={login.isPending || !username.trim() || !password}>
          Sign in
        </button>
        <p className="muted small">
          Lost the admin password? On the server: <code>plantops user passwd NAME --password-stdin</code>
        </p>
      </form>
    </AuthCard>
  );
}

export function Setup() {
  const [params] = useSearchParams();
  const [token, setToken] = useState(params.get("token") ?? "");
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const setup = useMutation({
    mutationFn: () => api.setup(token.trim(), username.trim(), password),
    onSuccess: () => window.location.assign("/"),
  });
  const problem =
    password && password.length < MIN_PASSWORD
      ? `At least ${MIN_PASSWORD} characters`
      : confirm && confirm !== password
        ? "The passwords differ"
        : null;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!problem) setup.mutate();
  };
  return (
    <AuthCard title="Create the first admin">
      <p className="muted">
        This PlantOps has no account yet. The setup link in the server's log (or the file <code>setup-token</code> in
        its data directory) lets you create the first admin.
      </p>
      <form className="stack" onSubmit={submit} aria-label="Create the first admin">
        {!params.get("token") && (
          <label>
            Setup token
            <input name="token" value={token} onChange={(e) => setToken(e.target.value)} required />
          </label>
        )}
        <label>
          Username
          <input
            name="username"
            autoComplete="username"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            required
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete="new-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
        </label>
        <label>
          Repeat the password
          <input
            name="confirm"
            type="password"
            autoComplete="new-password"
            value={confirm}
            onChange={(e) => setConfirm(e.target.value)}
            required
          />
        </label>
        {(problem || setup.isError) && (
          <p className="field-error" role="alert">
            {problem ?? setup.error?.message}
          </p>
        )}
        <button
          type="submit"
          disabled={setup.isPending || !!problem || !token.trim() || !password || confirm !== password}
        >
          Create admin
        </button>
      </form>
    </AuthCard>
  );
}
