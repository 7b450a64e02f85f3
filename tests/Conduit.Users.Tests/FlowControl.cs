using System.Runtime.CompilerServices;

namespace Conduit.Users.Tests;

internal static class FlowControl
{
    /// <summary>
    /// SocketsHttpHandler grows an HTTP/2 stream's receive window as fast as data is consumed
    /// (up to megabytes on loopback). Tests that prove a server stream is held back by flow
    /// control (ListUsers must not run ahead of a client that stopped reading) need the fixed
    /// 64 KiB window of the spec's default, so this test process turns the growth off before any
    /// handler exists.
    /// </summary>
    [ModuleInitializer]
    internal static void UseFixedHttp2Windows() =>
        AppContext.SetSwitch("System.Net.SocketsHttpHandler.Http2FlowControl.DisableDynamicWindowSizing", true);
}
