// Accounts (admins add, change and remove them) and the signed-in user's
// own password and API tokens.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api } from "../lib/api";
import type { Role, Scope, User } from "../lib/types";
import { formatTime, timeAgo } from "../lib/format";
import { EmptyState, ErrorState, OneTimeSecret, Skeleton } from "../components/ui";
import { keys, tokensQuery, usersQuery } from "../lib/queries";
import { useSession } from "../lib/session";

function AddUser() {
  const client = useQueryClient();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const create = useMutation({
    mutationFn: () => api.createUser({ username: username.trim(), password, role }),
    onSuccess: () => {
      setUsername("");
      setPassword("");
      client.invalidateQueries({ queryKey: keys.users });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  return (
    <form className="card row align-end" onSubmit={submit} aria-label="Add a user">
      <label>
        Username
        <input name="new-username" value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="off" />
      </label>
      <label>
        Password
        <input
          name="new-password"
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
      </label>
      <label>
        Role
        <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
          <option value="viewer">Viewer (reads only)</option>
          <option value="admin">Admin</option>
        </select>
      </label>
      <button type="submit" disabled={create.isPending || !username.trim() || password.length < 8}>
        Add user
      </button>
      <span className={create.isError ? "field-error" : "muted small"}>
        {create.error?.message ?? "Passwords need at least 8 characters."}
      </span>
    </form>
  );
}

function UserRow({ user, self, canEdit }: { user: User; self: boolean; canEdit: boolean }) {
  const client = useQueryClient();
  const refresh = () => client.invalidateQueries({ queryKey: keys.users });
  const change = useMutation({ mutationFn: (role: Role) => api.updateUser(user.id, { role }), onSuccess: refresh });
  const remove = useMutation({ mutationFn: () => api.deleteUser(user.id), onSuccess: refresh });
  const error = change.error ?? remove.error;
  return (
    <tr data-testid="user-row">
      <td>
        {user.username}
        {self && <span className="muted small"> (you)</span>}
      </td>
      <td>
        {canEdit ? (
          <label className="small">
            <span className="sr-only">Role of {user.username}</span>
            <select
              value={user.role}
              disabled={change.isPending}
              onChange={(e) => change.mutate(e.target.value as Role)}
            >
              <option value="admin">Admin</option>
              <option value="viewer">Viewer</option>
            </select>
          </label>
        ) : (
          user.role
        )}
      </td>
      <td title={formatTime(user.created_at)}>{timeAgo(user.created_at)}</td>
      <td>
        {canEdit && (
          <button type="button" className="danger" disabled={remove.isPending} onClick={() => remove.mutate()}>
            Remove
          </button>
        )}
        {error && <div className="field-error">{error.message}</div>}
      </td>
    </tr>
  );
}

export function Users() {
  const { user: me, canEdit } = useSession();
  const users = useQuery(usersQuery());
  return (
    <div className="stack">
      <h1>Users</h1>
      <p className="muted">Admins change everything; viewers read everything and change nothing.</p>
      {canEdit && <AddUser />}
      {users.isPending && <Skeleton lines={3} label="Loading users" />}
      {users.isError && <ErrorState error={users.error} retry={() => users.refetch()} />}
      {users.data && (
        <div className="card table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Added</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.data.users.map((user) => (
                <UserRow key={user.id} user={user} self={user.id === me.id} canEdit={canEdit} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function ChangePassword() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const change = useMutation({
    mutationFn: () => api.changePassword(current, next),
    onSuccess: () => {
      setCurrent("");
      setNext("");
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    change.mutate();
  };
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="password-title">
      <h2 id="password-title">Password</h2>
      <div className="row align-end">
        <label>
          Current password
          <input
            type="password"
            autoComplete="current-password"
            value={current}
            onChange={(e) => setCurrent(e.target.value)}
          />
        </label>
        <label>
          New password
          <input type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} />
        </label>
        <button type="submit" disabled={change.isPending || !current || next.length < 8}>
          Change password
        </button>
      </div>
      {change.isError && <p className="field-error">{change.error.message}</p>}
      {change.isSuccess && <p className="notice success flush">Changed. Every other session of yours has ended.</p>}
    </form>
  );
}

function Tokens() {
  const client = useQueryClient();
  const { canEdit } = useSession();
  const tokens = useQuery(tokensQuery());
  const [name, setName] = useState("");
  const [scope, setScope] = useState<Scope>("read");
  const [issued, setIssued] = useState<string | null>(null);
  const refresh = () => client.invalidateQueries({ queryKey: keys.tokens });
  const create = useMutation({
    mutationFn: () => api.createToken(name.trim(), scope),
    onSuccess: (token) => {
      setName("");
      setIssued(token.token);
      refresh();
    },
  });
  const revoke = useMutation({ mutationFn: api.deleteToken, onSuccess: refresh });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  return (
    <section className="stack" aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <p className="muted">
        For Prometheus, scripts and Home Assistant: send as <code>Authorization: Bearer …</code>. A read token may only
        read; a full token may do what you may.
      </p>
      {issued ? (
        <OneTimeSecret title="New API token" secret={issued} onDone={() => setIssued(null)} />
      ) : (
        <form className="card row align-end" onSubmit={submit} aria-label="Create an API token">
          <label>
            Name
            <input name="token-name" value={name} placeholder="prometheus" onChange={(e) => setName(e.target.value)} />
          </label>
          <label>
            Scope
            <select value={scope} onChange={(e) => setScope(e.target.value as Scope)}>
              <option value="read">Read</option>
              {canEdit && <option value="full">Full</option>}
            </select>
          </label>
          <button type="submit" disabled={create.isPending || !name.trim()}>
            Create token
          </button>
          {create.isError && <span className="field-error">{create.error.message}</span>}
        </form>
      )}
      {tokens.isError && <ErrorState error={tokens.error} retry={() => tokens.refetch()} />}
      {tokens.data?.tokens.length === 0 && <EmptyState title="No API tokens yet" />}
      {tokens.data && tokens.data.tokens.length > 0 && (
        <div className="card table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Scope</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tokens.data.tokens.map((token) => (
                <tr key={token.id} data-testid="token-row">
                  <td>{token.name}</td>
                  <td>{token.scope}</td>
                  <td title={formatTime(token.created_at)}>{timeAgo(token.created_at)}</td>
                  <td>{token.last_used_at ? timeAgo(token.last_used_at) : "never"}</td>
                  <td>
                    <button type="button" className="danger" onClick={() => revoke.mutate(token.id)}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function Account() {
  const { user } = useSession();
  return (
    <div className="stack">
      <h1>Your account</h1>
      <p className="muted">
        Signed in as <strong>{user.username}</strong> ({user.role}).
      </p>
      <ChangePassword />
      <Tokens />
    </div>
  );
}
