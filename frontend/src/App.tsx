import { createContext, useContext, useEffect } from "react";
import { QueryClientProvider, useMutation, useQuery, type QueryClient } from "@tanstack/react-query";
import { BrowserRouter, Navigate, NavLink, Route, Routes, useLocation } from "react-router-dom";
import { api, ApiError, onUnauthorized } from "./lib/api";
import { authStatusQuery, meQuery } from "./lib/queries";
import { SessionContext, useSession, type Session } from "./lib/session";
import type { AuthStatus } from "./lib/types";
import { Login, Setup } from "./pages/Auth";
import { Account, Users } from "./pages/Users";
import { useLiveEvents, type LiveState } from "./lib/live";
import { Dashboard } from "./pages/Dashboard";
import { PlantDetail } from "./pages/PlantDetail";
import { Devices } from "./pages/Devices";
import { Alerts } from "./pages/Alerts";
import { Settings } from "./pages/Settings";
import { CarePlanPage } from "./pages/CarePlan";
import { EmptyState, ErrorState, Skeleton } from "./components/ui";

const LIVE_LABEL: Record<LiveState, string> = {
  connecting: "Connecting…",
  live: "● Live",
  reconnecting: "○ Reconnecting…",
};

/** The opt-outs are loud: every page says so. */
function OptOutBanner({ status }: { status: AuthStatus }) {
  if (!status.auth) {
    return (
      <p className="notice error banner" role="alert" data-testid="opt-out-banner">
        Authentication is off (PLANTOPS_AUTH=off): anyone who can reach this server can read and change everything.
      </p>
    );
  }
  if (status.enrollment_open) {
    return (
      <p className="notice warning banner" role="alert" data-testid="opt-out-banner">
        Open enrollment (PLANTOPS_ENROLLMENT=open): any device on the network can register without a key.
      </p>
    );
  }
  return null;
}

function SignedInUser() {
  const { user, status } = useSession();
  const logout = useMutation({
    mutationFn: api.logout,
    onSettled: () => window.location.assign("/login"),
  });
  if (!status.auth) return null;
  return (
    <div className="row user-menu">
      <NavLink to="/account" data-testid="signed-in-user">
        {user.username} <span className="muted small">({user.role})</span>
      </NavLink>
      <button type="button" className="secondary" disabled={logout.isPending} onClick={() => logout.mutate()}>
        Sign out
      </button>
    </div>
  );
}

function Layout() {
  const { user, status } = useSession();
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <NavLink to="/" className="brand">
          <img className="icon-inline" src="/favicon.svg" alt="" width="20" height="20" /> PlantOps
        </NavLink>
        <nav className="app-nav" aria-label="Main">
          <NavLink to="/" end>
            Dashboard
          </NavLink>
          <NavLink to="/devices">Devices</NavLink>
          <NavLink to="/alerts">Alerts</NavLink>
          <NavLink to="/settings">Settings</NavLink>
          {user.role === "admin" && status.auth && <NavLink to="/users">Users</NavLink>}
        </nav>
        <LiveIndicator />
        <SignedInUser />
      </header>
      <OptOutBanner status={status} />
      <main id="main" tabIndex={-1}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          <Route path="/plants/:id" element={<PlantDetail />} />
          <Route path="/plants/:id/care" element={<CarePlanPage />} />
          <Route path="/devices" element={<Devices />} />
          <Route path="/alerts" element={<Alerts />} />
          <Route path="/settings" element={<Settings />} />
          <Route path="/users" element={<Users />} />
          <Route path="/account" element={<Account />} />
          <Route path="/login" element={<Navigate to="/" replace />} />
          <Route path="/setup" element={<Navigate to="/" replace />} />
          <Route
            path="*"
            element={
              <EmptyState title="Page not found">
                <NavLink to="/">Back to the dashboard</NavLink>
              </EmptyState>
            }
          />
        </Routes>
      </main>
    </>
  );
}

const LiveContext = createContext<LiveState>("connecting");

function LiveIndicator() {
  const state = useContext(LiveContext);
  return (
    <span className="live" role="status" aria-live="polite" data-testid="live-state">
      {LIVE_LABEL[state]}
    </span>
  );
}

function Live({ client }: { client: QueryClient }) {
  const state = useLiveEvents(client);
  return (
    <LiveContext.Provider value={state}>
      <Layout />
    </LiveContext.Provider>
  );
}

/** The login page, remembering where the user was. */
function toLogin(location: { pathname: string; search: string }): string {
  return `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
}

function SignedIn({ client, status }: { client: QueryClient; status: AuthStatus }) {
  const location = useLocation();
  const me = useQuery(meQuery());
  useEffect(() => {
    // A session that expires or is ended elsewhere: back to the login page,
    // then here again.
    onUnauthorized(() => window.location.assign(toLogin(window.location)));
    return () => onUnauthorized(null);
  }, []);
  if (me.isPending) return <Skeleton lines={4} label="Loading" />;
  if (me.isError) {
    if (me.error instanceof ApiError && me.error.status === 401) return <Navigate to={toLogin(location)} replace />;
    return <ErrorState error={me.error} retry={() => me.refetch()} />;
  }
  const session: Session = { user: me.data, canEdit: me.data.role === "admin", status };
  return (
    <SessionContext.Provider value={session}>
      <Live client={client} />
    </SessionContext.Provider>
  );
}

function Gate({ client }: { client: QueryClient }) {
  const location = useLocation();
  const status = useQuery(authStatusQuery());
  if (status.isPending) return <Skeleton lines={4} label="Loading" />;
  if (status.isError) return <ErrorState error={status.error} retry={() => status.refetch()} />;
  if (status.data.setup_required) return <Setup />;
  if (status.data.auth && location.pathname === "/login") return <Login />;
  return <SignedIn client={client} status={status.data} />;
}

export function App({ client }: { client: QueryClient }) {
  return (
    <QueryClientProvider client={client}>
      <BrowserRouter>
        <Gate client={client} />
      </BrowserRouter>
    </QueryClientProvider>
  );
}
