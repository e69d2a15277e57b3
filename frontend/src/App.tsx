import { createContext, useContext } from "react";
import { QueryClientProvider, type QueryClient } from "@tanstack/react-query";
import { BrowserRouter, NavLink, Route, Routes } from "react-router-dom";
import { useLiveEvents, type LiveState } from "./lib/live";
import { Dashboard } from "./pages/Dashboard";
import { PlantDetail } from "./pages/PlantDetail";
import { Devices } from "./pages/Devices";
import { Alerts } from "./pages/Alerts";
import { Settings } from "./pages/Settings";
import { CarePlanPage } from "./pages/CarePlan";
import { EmptyState } from "./components/ui";

const LIVE_LABEL: Record<LiveState, string> = {
  connecting: "Connecting…",
  live: "● Live",
  reconnecting: "○ Reconnecting…",
};

function Layout() {
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
        </nav>
        <LiveIndicator />
      </header>
      <main id="main" tabIndex={-1}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          <Route path="/plants/:id" element={<PlantDetail />} />
          <Route path="/plants/:id/care" element={<CarePlanPage />} />
          <Route path="/devices" element={<Devices />} />
          <Route path="/alerts" element={<Alerts />} />
          <Route path="/settings" element={<Settings />} />
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

export function App({ client }: { client: QueryClient }) {
  return (
    <QueryClientProvider client={client}>
      <BrowserRouter>
        <Live client={client} />
      </BrowserRouter>
    </QueryClientProvider>
  );
}
