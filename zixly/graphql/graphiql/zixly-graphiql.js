// Zixly's GraphiQL page: GraphiQL 3 on React 18 (UMD builds served by Zixly itself).
// The headers editor opens with {"Authorization": "Bearer <token>"}; a header still holding
// the placeholder is never sent, and the schema is fetched once real credentials are there.
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var config = JSON.parse(document.getElementById("zixly-graphiql-config").textContent);
  if (!window.React || !window.ReactDOM || !window.GraphiQL) {
    root.textContent =
      "GraphiQL's scripts did not load. Run `zixly graphiql install` on the server and reload.";
    return;
  }
  var httpUrl = new URL(config.endpoint, window.location.href);
  var wsUrl = new URL(httpUrl.href);
  wsUrl.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:";

  // The editor's headers without any that still hold the placeholder.
  function credentials(headers) {
    var kept = {};
    Object.keys(headers || {}).forEach(function (name) {
      var value = headers[name];
      if (typeof value === "string" && value.indexOf(config.tokenPlaceholder) !== -1) {
        return;
      }
      kept[name] = value;
    });
    return kept;
  }

  // What the schema depends on: the credentials as text; null while the editor's JSON does
  // not parse (the previous credentials stay).
  function credentialKey(text) {
    var parsed;
    try {
      parsed = JSON.parse(text && text.trim() ? text : "{}");
    } catch (_error) {
      return null;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      return null;
    }
    var kept = credentials(parsed);
    return Object.keys(kept).length ? JSON.stringify(kept) : "";
  }

  function makeFetcher() {
    // Plain JSON over POST (Zixly has no incremental delivery); subscriptions over the
    // WebSocket, where GraphiQL's toolkit sends the editor's headers in connection_init.
    var inner = GraphiQL.createFetcher({
      url: httpUrl.href,
      subscriptionUrl: wsUrl.href,
      enableIncrementalDelivery: false,
    });
    return function (params, options) {
      var opts = Object.assign({}, options || {});
      opts.headers = credentials(opts.headers);
      return inner(params, opts);
    };
  }

  function ZixlyGraphiQL() {
    var state = React.useState(credentialKey(config.defaultHeaders) || "");
    var key = state[0];
    var setKey = state[1];
    // A new fetcher when the credentials change: GraphiQL then fetches the schema again.
    var fetcher = React.useMemo(makeFetcher, [key]);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      schema: key ? undefined : null, // null: no introspection before there is a token
      defaultQuery: config.defaultQuery,
      defaultHeaders: config.defaultHeaders,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      onEditHeaders: function (text) {
        var next = credentialKey(text);
        if (next !== null) {
          setKey(next);
        }
      },
    });
  }

  root.textContent = "";
  ReactDOM.createRoot(root).render(React.createElement(ZixlyGraphiQL));
})();
