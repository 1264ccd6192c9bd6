// GraphiQL for keyledger: queries and mutations over POST /graphql,
// subscriptions over /graphql/ws. A token typed in the Headers tab as
// {"Authorization": "Bearer …"} is sent with every request, and in the
// websocket's connection_init (read when the socket opens: reload the page
// after changing it to use it for subscriptions).
'use strict';
(function () {
  const http = new URL('/graphql', window.location.href);
  const ws = new URL('/graphql/ws', window.location.href);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  function connectionParams() {
    try {
      const headers = JSON.parse(window.localStorage.getItem('graphiql:headers') || '{}');
      const authorization = headers.Authorization || headers.authorization;
      return authorization ? { authorization: authorization } : {};
    } catch (_) {
      return {};
    }
  }
  const fetcher = GraphiQL.createFetcher({
    url: http.href,
    subscriptionUrl: ws.href,
    wsConnectionParams: connectionParams,
  });
  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: 'headers',
      defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
      defaultQuery: '# Sign in with the signIn mutation, put the token in the Headers tab,\n# then ask who you are:\n{ me { email role } }\n',
    }),
  );
})();
